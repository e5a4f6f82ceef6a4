"""Do per-example gradients repeat bit for bit on this device? Two identical passes, compared, for each attention path.

SDPA's fused backward kernels on a GPU (flash, memory-efficient) may add partial gradients with atomics, in no fixed
order; torch's deterministic mode (``torch.use_deterministic_algorithms``) is said to switch them to ordered paths.
This probe answers it for the installed stack: :func:`inflow.gradients.per_example.per_example_grads` on a small
random Llama (SDPA attention, LoRA on q/k/v/o; under autocast prepared as the features stage prepares it,
:func:`inflow.models.autocast.autocast_only`) twice on the same right-padded batch, without the padding mask (the
features stage's GPU path: the causal flash kernel) and with it (the masked kernel), in the default mode and in
torch's deterministic mode. Each line says whether the two passes gave the same bits and, if not, their largest
relative difference; a mode that raises prints its error.

    python benchmarks/determinism.py --device cuda     # bfloat16 autocast, as precision auto there
    python benchmarks/determinism.py                   # CPU, float32 (checks the script)
"""

from __future__ import annotations

import os
import sys

# torch's deterministic mode refuses cuBLAS calls unless its workspace is fixed before CUDA starts
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402

from _common import ModelSize, apply_threads, machine, parser, result_line, synthetic_examples  # noqa: E402
from _common import tiny_lora_model  # noqa: E402
from inflow.data.batching import collate  # noqa: E402
from inflow.devices import autocast, autocast_dtype, resolve_device, resolve_precision  # noqa: E402
from inflow.gradients.per_example import per_example_grads  # noqa: E402
from inflow.models.autocast import autocast_only  # noqa: E402

SIZE = ModelSize(hidden=512, layers=4, heads=8, intermediate=1408, vocab=32000, kv_heads=8)  # head dim 64


def compare(model: torch.nn.Module, batch: dict, amp: torch.dtype | None, causal_only: bool) -> dict[str, object]:
    """Two passes of the same batch: whether their bits are equal, and their largest relative difference."""
    device = next(model.parameters()).device
    runs = []
    for _ in range(2):
        with autocast(device, amp):
            runs.append(per_example_grads(model, batch, causal_only=causal_only)[0])
    gap = ((runs[0] - runs[1]).abs().max() / runs[0].abs().max()).item()
    return {"same_bits": torch.equal(runs[0], runs[1]), "max_rel_diff": gap}


def main(argv: list[str]) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--tokens", type=int, default=512, help="longest row (rows are 1/2 to all of it)")
    args = p.parse_args(argv)
    apply_threads(args.threads)
    device = resolve_device(args.device, "--device")
    precision = resolve_precision("auto", device)
    amp = autocast_dtype(precision, device)
    model = tiny_lora_model(SIZE, attention="sdpa", device=device)
    if amp is not None:  # as the features stage prepares it
        autocast_only(model, amp)
    rows = synthetic_examples(args.rows, SIZE.vocab, args.tokens // 2, args.tokens, seed=1)
    batch = {k: v.to(device) for k, v in collate(rows, pad_id=0).items()}
    print(f"{machine()}; {precision}; batch {tuple(batch['input_ids'].shape)}", flush=True)
    for deterministic in (False, True):
        torch.use_deterministic_algorithms(deterministic)
        for causal_only in (True, False):
            figures: dict[str, object] = {"deterministic_mode": deterministic,
                                          "attention": "causal" if causal_only else "masked"}
            try:
                figures |= compare(model, batch, amp, causal_only)
            except RuntimeError as error:  # an op without a deterministic implementation, in that mode
                figures["error"] = str(error).splitlines()[0][:160].replace(" ", "_")
            print(result_line(figures), flush=True)
    torch.use_deterministic_algorithms(False)


if __name__ == "__main__":
    main(sys.argv[1:])
