"""Activation memory of a per-example gradient pass, per token and decoder layer, measured on any device.

A GPU batch's size is set by what a pass keeps for its backward (:func:`inflow.devices.default_batch_tokens`
estimates it as ``64 * hidden`` bytes per token and layer). This counts it exactly, on the CPU as on a GPU: the
distinct tensors autograd saves plus the LoRA factor inputs that ``per_example_grads`` holds
(:class:`_common.SavedActivations`), for a model of the chosen shape with 1 and with 2 decoder layers (the
difference is one layer's: the embedding, final norm and LM head cancel), over batches of ``--rows`` and twice as
many rows (the difference is per token; the rest, per layer whatever the batch). Side by side, under bfloat16
autocast (``--precision``):

- ``fp32_weights``: the model as loaded (float32 weights; autocast rounds each frozen weight, and each input, per
  call, and keeps the rounded weights for the backward: the bytes per layer whatever the batch);
- ``unshared``: :func:`inflow.models.autocast.autocast_only` without shared casts (16-bit frozen Linear weights,
  LoRA layers keep their input's dtype); its per-example gradients are checked to be ``fp32_weights``' bits
  (``unshared_same_bits``);
- ``autocast_only``: as the features stage prepares it (``unshared`` plus one 16-bit copy of a float32 input for
  all the layers that read it); ``shared_rel_diff_max``: the largest relative L2 difference between a row of its
  per-example gradients and ``fp32_weights``' (bfloat16 itself puts them about 1e-2 from float64);
- ``checkpointing``: ``autocast_only`` with activation checkpointing (``features.gradient_checkpointing``);
- ``compiled``: ``autocast_only`` with compiled decoder layers (``features.compile``: what the compiled graphs
  save, which the compiler's partitioner chooses, recomputing cheap elementwise results in the backward);
  ``compiled_rel_diff_max`` as ``shared_rel_diff_max``, against ``autocast_only``.

Every pass runs ``per_example_grads`` on the same batch without the padding mask (as on a GPU). ::

    .venv/bin/python benchmarks/activations.py --quick        # the quick shape, seconds
    .venv/bin/python benchmarks/activations.py --size 7b      # Llama-2-7B's layer shape, ~5 min on 2 cores

The last line: ``kib_per_token_layer_<variant>``, ``mib_per_layer_<variant>``, ``estimate_kib`` (the batch-size
estimate's ``64 * hidden``), ``saved_vs_fp32`` (1 - autocast_only / fp32_weights), ``unshared_same_bits`` and
``shared_rel_diff_max`` (and each variant's own figures when it ran: ``--variants`` picks them; ``fp32_weights``
and ``autocast_only`` always run).
"""

from __future__ import annotations

import dataclasses

import torch

from _common import SIZES, SavedActivations, apply_threads, machine, parser, result_line, synthetic_examples
from _common import tiny_lora_model
from inflow.data.batching import collate
from inflow.devices import autocast_dtype
from inflow.gradients.blocks import lora_parameters
from inflow.gradients.checkpointing import checkpoint_layers, checkpointed_modules
from inflow.gradients.compiling import compile_layers
from inflow.gradients.per_example import lora_linears, per_example_grads
from inflow.models.autocast import autocast_only
from inflow.store.attrs import PRECISIONS

KIB, MIB = 1 << 10, 1 << 20
VARIANTS = ("fp32_weights", "unshared", "autocast_only", "checkpointing", "compiled")


def layer_bytes(size_name: str, variant: str, precision: str, batches: list[dict[str, torch.Tensor]],
                seed: int) -> tuple[float, float, torch.Tensor]:
    """What one decoder layer keeps for the backward: bytes per padded token and bytes whatever the batch (16-bit
    weight copies), from passes over two batches with models of 1 and 2 layers; and the per-example gradients
    ``[B, D]`` of the 2-layer model on the first batch."""
    amp = autocast_dtype(precision, torch.device("cpu"), "--precision")
    kept: dict[tuple[int, int], int] = {}
    grads = None
    for layers in (1, 2):
        model = tiny_lora_model(dataclasses.replace(SIZES[size_name], layers=layers), seed=seed, attention="sdpa")
        if variant != "fp32_weights" and amp is not None:  # (compiled layers share their casts themselves)
            autocast_only(model, amp, share_casts=variant not in ("unshared", "compiled"))
        if variant == "compiled":
            compile_layers(model)
        if variant == "checkpointing":
            checkpoint_layers(model)
        deferred = checkpointed_modules(model)  # there per_example_grads takes the inputs from the recompute
        held = [m for _, m in lora_linears(model, lora_parameters(model)) if id(m) not in deferred]
        for i, batch in enumerate(batches):
            with SavedActivations(model, held) as saved, torch.autocast("cpu", dtype=amp or torch.bfloat16,
                                                                  enabled=amp is not None):
                g, _ = per_example_grads(model, batch, causal_only=True)
            kept[layers, i] = saved.bytes
            if i == 0:
                grads = g
        del model
    layer = [kept[2, i] - kept[1, i] for i in range(2)]
    tokens = [b["input_ids"].numel() for b in batches]
    per_token = (layer[1] - layer[0]) / (tokens[1] - tokens[0])
    return per_token, layer[0] - per_token * tokens[0], grads


def rel_diff_max(got: torch.Tensor, want: torch.Tensor) -> float:
    """The largest relative L2 difference between a row of ``got [B, D]`` and the same row of ``want``."""
    return float(((got.double() - want.double()).norm(dim=1) / want.double().norm(dim=1)).max())


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), help="layer shape (default: 7b; quick with --quick)")
    p.add_argument("--rows", type=int, default=2)
    p.add_argument("--tokens", type=int, help="tokens per row (default 256, quick 64)")
    p.add_argument("--precision", default="bfloat16", choices=PRECISIONS, help="autocast of the pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated, of {','.join(VARIANTS)} (fp32_weights and autocast_only always run)")
    args = p.parse_args(argv)
    apply_threads(args.threads)
    size_name = args.size or ("quick" if args.quick else "7b")
    size = SIZES[size_name]
    tokens = args.tokens or (64 if args.quick else 256)
    rows = synthetic_examples(2 * args.rows, size.vocab, tokens, tokens, seed=args.seed)
    batches = [collate(rows[:args.rows], pad_id=0), collate(rows, pad_id=0)]
    print(f"layer shape {size_name} ({size}), LoRA r=8 on q/k/v/o; {args.rows} and {2 * args.rows} rows x {tokens} "
          f"tokens; "
          f"{args.precision} autocast; {machine()}", flush=True)
    figures: dict[str, object] = {}
    grads = {}
    chosen = set(args.variants.split(",")) | {"fp32_weights", "autocast_only"}
    unknown = chosen - set(VARIANTS)
    if unknown:
        p.error(f"--variants: unknown {sorted(unknown)}; choose among {', '.join(VARIANTS)}")
    for variant in [v for v in VARIANTS if v in chosen]:
        per_token, fixed, grads[variant] = layer_bytes(size_name, variant, args.precision, batches, args.seed)
        figures[f"kib_per_token_layer_{variant}"] = per_token / KIB
        figures[f"mib_per_layer_{variant}"] = fixed / MIB
        print(f"  {variant}: {per_token / KIB:.1f} KiB per token and layer, {fixed / MIB:.1f} MiB per layer "
              "whatever the batch", flush=True)
    estimate = 64 * size.hidden
    figures.update({
        "estimate_kib": estimate / KIB,
        "saved_vs_fp32": 1 - figures["kib_per_token_layer_autocast_only"] / figures["kib_per_token_layer_fp32_weights"],
        "shared_rel_diff_max": rel_diff_max(grads["autocast_only"], grads["fp32_weights"])})
    if "unshared" in grads:
        figures["unshared_same_bits"] = torch.equal(grads["fp32_weights"], grads["unshared"])
    if "checkpointing" in grads:
        figures["checkpointing_same_bits"] = torch.equal(grads["autocast_only"], grads["checkpointing"])
    if "compiled" in grads:
        figures["compiled_rel_diff_max"] = rel_diff_max(grads["compiled"], grads["autocast_only"])
    figures.update({"size": size_name, "rows": args.rows, "tokens": tokens, "precision": args.precision})
    print(result_line(figures), flush=True)


if __name__ == "__main__":
    main()
