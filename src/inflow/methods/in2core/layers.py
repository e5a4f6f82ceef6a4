"""Which layer blocks In2Core keeps (``in2core.layers``): its "reduced layers" cut the cost of influence."""

from __future__ import annotations

import json
from collections.abc import Sequence


def kept_blocks(spec: str | Sequence[int], n_blocks: int) -> list[int]:
    """The block indices (ascending) that ``spec`` names among ``n_blocks`` layer blocks.

    ``spec``: ``"all"``; ``"first:K"`` / ``"last:K"`` (the K blocks nearest the input / the output); or a list of
    block indices (negative ones count from the end, as in Python). Raises ``ValueError`` saying what to write.
    """
    if isinstance(spec, str):
        if spec == "all":
            return list(range(n_blocks))
        where, _, count = spec.partition(":")
        if where not in ("first", "last") or not count.isdigit() or int(count) < 1:
            raise ValueError(f"in2core.layers: {spec!r} is not all, first:K, last:K (K >= 1) or a list of block "
                             "indices such as [0, 1]")
        k = min(int(count), n_blocks)
        return list(range(k)) if where == "first" else list(range(n_blocks - k, n_blocks))
    picked = []
    for i in spec:
        if not -n_blocks <= int(i) < n_blocks:
            raise ValueError(f"in2core.layers: block {i} does not exist: the gradients have {n_blocks} layer blocks "
                             f"(0..{n_blocks - 1}, or -1..-{n_blocks} from the end)")
        picked.append(int(i) % n_blocks)
    if not picked:
        raise ValueError("in2core.layers: the list is empty; name at least one block, or write all")
    return sorted(set(picked))


def layers_text(spec: str | Sequence[int]) -> str:
    """``spec`` as one string (a list as JSON), e.g. for a features job; :func:`parse_layers` reads it back."""
    return spec if isinstance(spec, str) else json.dumps([int(i) for i in spec])


def parse_layers(text: str) -> str | list[int]:
    """The inverse of :func:`layers_text`."""
    return json.loads(text) if text.startswith("[") else text
