"""Extraction throughput: our batched per-example gradients + Adam features + block sketch, against two baselines.

Measured side by side in one run, on the same model, the same examples and the same length-bucketed batches:

- ``ours``: :func:`inflow.gradients.per_example.per_example_grads` (one forward/backward per batch, hooks) ->
  :func:`inflow.gradients.features.adam_features` -> :class:`inflow.sketch.groups.SketchGroups` over
  :meth:`inflow.sketch.BlockSketch.project` (``--kind``, default ``rademacher``, dim 8192), as the features
  stage runs it: a pass is one store chunk, its features gathered up to ``--group-mib`` per sketch call. The
  sketch's share of this time is timed separately.
- ``less_loop``: a LESS-style reference written here: one forward+backward per example (``torch.autograd.grad``
  on the LoRA parameters, unpadded), the same Adam feature, then a dense blocked Rademacher projection of the
  batch, its +-1/sqrt(d) matrices drawn with torch's RNG piece by piece on every call (what TRAK's
  ``BasicProjector``, LESS's CPU fallback, does).
- ``train_step``: a plain training step on each batch: forward, backward, AdamW step on the LoRA parameters.

Each method runs once untimed (warm-up: allocator, sketch cache), then ``--repeats`` timed passes over all
batches, the methods interleaved batch by batch so that load from other processes hits them alike; figures
are mean times per pass. The last line holds the figures.

On a GPU (``--device cuda``, with ``--precision bfloat16`` as the features stage's ``features.precision``; the
``--size 1b`` model is Llama-3.2-1B-shaped, ``--size 7b`` Llama-2-7B-shaped) every method runs there under the same
autocast, clocks are read after ``torch.cuda.synchronize``, and the last line adds model TFLOP/s and their
fraction of the GPU's peak (:func:`_common.model_flops`, :func:`_common.peak_tflops`), peak GPU memory and the
memory above the weights per padded token of the largest batch (``gpu_mib_per_token``; tokens/s on every device:
``ours_tok_per_s``). ``--attention sdpa`` loads the model with torch's SDPA, as the features stage does
(the default, eager, is what the figures in docs/benchmarks.md were taken with).

``--defaults`` runs instead exactly what the features stage runs with ``features.device: auto`` and every other
features setting at its default: :func:`inflow.pipeline.features.featurize` over all examples as one chunk, with
SDPA attention, ``precision: auto``, ``batch_tokens`` from :func:`inflow.devices.default_batch_tokens`, on a CPU one
batch per core at one intra-op thread (``threads: 0``), on a GPU without the padding mask (``--padding-mask`` keeps
it, to measure what dropping it gains), sketch groups of :func:`inflow.devices.default_group_mib` (256 MiB on a
CPU, 1/64 of a GPU's memory), the model prepared for autocast as the stage does
(:func:`inflow.models.autocast.autocast_only`: 16-bit frozen weights, shared 16-bit input copies); against the
LESS-style loop at every core (on the same model, eager). ``--compile`` compiles the decoder layers
(``features.compile``); the untimed warm-up pass compiles.
Passes alternate (ours, loop, ours, ...); the last line adds ``batch_tokens`` and ``workers``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import torch

from _common import ATTENTION, SIZES, Stopwatch, apply_threads, device_sync, machine, model_flops, parser
from _common import peak_tflops, result_line, synthetic_examples, tiny_lora_model
from _defaults import BETA1, BETA2, EPS, defaults_run, fake_adam_state
from inflow.data.batching import collate, length_batches
from inflow.devices import autocast, autocast_dtype, resolve_device
from inflow.gradients.blocks import lora_blocks, lora_parameters
from inflow.gradients.checkpointing import checkpoint_layers
from inflow.gradients.features import adam_features
from inflow.gradients.per_example import answer_positions, example_losses, per_example_grads
from inflow.parallel import resolve_threads, torch_threads
from inflow.pipeline.features import sketch_tf32_on
from inflow.sketch import BlockSketch
from inflow.sketch.block import allocate_dims
from inflow.sketch.cache import MIB
from inflow.sketch.groups import SketchGroups
from inflow.store.attrs import PRECISIONS

REFERENCE_PIECE_COLS = 512  # output columns per generated piece of the reference's dense matrix
EXTRA_KINDS = ("sparse_jl", "hadamard")


class Ours:
    """The library's extraction path for one batch: per-example grads -> Adam features -> block sketch.

    ``extra`` sketches (other kinds) are applied to the same features and timed under their own labels, outside
    the method's own time, so their share of an extraction pass can be reported from the same batches.
    """

    def __init__(self, model: torch.nn.Module, sketch: BlockSketch, state: tuple[torch.Tensor, torch.Tensor],
                 watch: Stopwatch, rows_per_pass: int, group_bytes: int, amp: torch.dtype | None = None,
                 extra: dict[str, BlockSketch] | None = None) -> None:
        self.model, self.sketch, self.state, self.watch, self.amp = model, sketch, state, watch, amp
        self.rows_per_pass, self.group_bytes = rows_per_pass, group_bytes
        self.extra = extra or {}
        self.pending: torch.Tensor | None = None
        self._start_pass()

    def _start_pass(self) -> None:
        self.groups = SketchGroups(self.sketch, torch.empty(self.rows_per_pass, self.sketch.out_dim),
                                   self.group_bytes)
        self.row = 0

    def __call__(self, batch: dict[str, torch.Tensor]) -> None:
        with self.watch("grads"), autocast(batch["input_ids"].device, self.amp):
            grads, _ = per_example_grads(self.model, batch)
        with self.watch("adam"):
            feats = adam_features(grads, *self.state, BETA1, BETA2, EPS)
        with self.watch("sketch"):
            self.groups.add(range(self.row, self.row + feats.shape[0]), feats.float())
        self.row += feats.shape[0]
        self.pending = feats

    def finish_pass(self) -> torch.Tensor:
        """Project the rows still gathered (the end of a chunk) and start the next pass."""
        with self.watch("sketch"):
            out = self.groups.finish()
        self._start_pass()
        return out

    def run_extra(self) -> None:
        """Project the last batch's features with every extra sketch kind (timed as ``sketch_<kind>``)."""
        if self.pending is not None:
            for kind, sketch in self.extra.items():
                with self.watch(f"sketch_{kind}"):
                    sketch.project(self.pending.float())
            self.pending = None


class LessLoop:
    """LESS-style reference: a backward per example, then a dense Rademacher projection regenerated per call."""

    def __init__(self, model: torch.nn.Module, block_sizes: list[int], dim: int, seed: int,
                 state: tuple[torch.Tensor, torch.Tensor], amp: torch.dtype | None = None) -> None:
        self.model, self.seed, self.state, self.amp = model, seed, state, amp
        self.params = [p for _, p in lora_parameters(model)]
        self.block_sizes = block_sizes
        self.out_dims = allocate_dims(block_sizes, dim)

    def grads(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        rows = []
        for b in range(batch["input_ids"].shape[0]):
            n = int(batch["attention_mask"][b].sum())
            with autocast(batch["input_ids"].device, self.amp):
                logits = self.model(input_ids=batch["input_ids"][b:b + 1, :n],
                                    attention_mask=batch["attention_mask"][b:b + 1, :n], use_cache=False).logits
            loss = example_losses(logits, batch["labels"][b:b + 1, :n])[0]
            found = torch.autograd.grad(loss, self.params)
            rows.append(torch.cat([g.reshape(-1) for g in found]))
        return torch.stack(rows)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Block-diagonal dense Rademacher projection; every piece of every matrix drawn anew (torch RNG)."""
        out, in_off = [], 0
        for b, (size, d) in enumerate(zip(self.block_sizes, self.out_dims)):
            xb = x[:, in_off:in_off + size]
            gen = torch.Generator(device=x.device).manual_seed(self.seed * 1_000_003 + b)
            matrix = torch.empty(size, min(REFERENCE_PIECE_COLS, d), device=x.device)
            for col in range(0, d, REFERENCE_PIECE_COLS):
                cols = min(REFERENCE_PIECE_COLS, d - col)
                piece = matrix[:, :cols].bernoulli_(0.5, generator=gen).mul_(2).sub_(1).mul_(d ** -0.5)
                out.append(xb @ piece)
            in_off += size
        return torch.cat(out, dim=1)

    def __call__(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.enable_grad():
            grads = self.grads(batch)
        return self.project(adam_features(grads, *self.state, BETA1, BETA2, EPS).float())


class TrainStep:
    """A plain training step: forward + backward + AdamW on the LoRA parameters (train mode, LoRA dropout on)."""

    def __init__(self, model: torch.nn.Module, amp: torch.dtype | None = None) -> None:
        self.model, self.amp = model, amp
        self.optimizer = torch.optim.AdamW([p for _, p in lora_parameters(model)], lr=1e-4)

    def __call__(self, batch: dict[str, torch.Tensor]) -> None:
        self.model.train()
        with autocast(batch["input_ids"].device, self.amp):
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            loss = example_losses(logits, batch["labels"]).mean()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.eval()


def interleaved_passes(methods: dict[str, Callable[[dict[str, torch.Tensor]], object]],
                       batches: list[dict[str, torch.Tensor]], repeats: int,
                       after: Callable[[str], None] | None = None,
                       sync: Callable[[], None] = lambda: None) -> dict[str, list[float]]:
    """Per method, the wall time of each of ``repeats`` passes over ``batches``.

    Methods are interleaved batch by batch (order rotated from batch to batch), so a burst of load from other
    processes on a shared machine slows every method alike instead of one whole pass. ``after(name)`` runs,
    untimed, after each call; a method's ``finish_pass()``, if it has one, runs timed at the end of each pass.
    ``sync`` runs before each clock reading (a GPU's queue is drained, so each method pays for its own kernels).
    """
    names = list(methods)
    times = {name: [0.0] * repeats for name in names}
    for rep in range(repeats):
        for i, batch in enumerate(batches):
            k = (rep + i) % len(names)
            for name in names[k:] + names[:k]:
                sync()
                start = time.perf_counter()
                methods[name](batch)
                sync()
                times[name][rep] += time.perf_counter() - start
                if after is not None:
                    after(name)
        for name in names:  # a method that gathers work across batches (ours' sketch groups) ends the pass
            finish = getattr(methods[name], "finish_pass", None)
            if finish is not None:
                sync()
                start = time.perf_counter()
                finish()
                sync()
                times[name][rep] += time.perf_counter() - start
        print("  pass " + f"{rep + 1}/{repeats}: " + ", ".join(f"{n} {t[rep]:.2f} s" for n, t in times.items()),
              flush=True)
    return times


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), help="model shape (default: default; quick with --quick; "
                   "1b: Llama-3.2-1B's, 7b: Llama-2-7B's)")
    p.add_argument("--attention", choices=ATTENTION, default="eager",
                   help="the model's attention: eager (as docs/benchmarks.md's figures) or sdpa (the features stage's)")
    p.add_argument("--examples", type=int, help="number of examples (default 256, quick 64)")
    p.add_argument("--min-len", type=int, help="shortest sequence (default 64, quick 32)")
    p.add_argument("--max-len", type=int, help="longest sequence (default 256, quick 128)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--sketch-dim", type=int, default=8192)
    p.add_argument("--kind", default="rademacher", choices=("rademacher", "sparse_jl", "hadamard"))
    p.add_argument("--repeats", type=int, help="timed passes per method (default 3)")
    p.add_argument("--r", type=int, default=8, help="LoRA rank")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--group-mib", type=int, default=256,
                   help="features gathered per sketch call (features.sketch_group_mib; 0: one batch a call)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (features.device)")
    p.add_argument("--precision", default="float32", choices=PRECISIONS,
                   help="autocast of the forward/backward (features.precision)")
    p.add_argument("--peak-tflops", type=float, help="the GPU's peak TFLOP/s at --precision (default: looked up)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute decoder layers in the backward (features.gradient_checkpointing), every method")
    p.add_argument("--batch-threads", type=int, default=0,
                   help="--defaults: gradient batches at once on a CPU (features.threads; default 0, every core)")
    p.add_argument("--padding-mask", action="store_true",
                   help="--defaults: keep the padding mask on a GPU too (the features stage drops it there)")
    p.add_argument("--compile", action="store_true",
                   help="--defaults: compile the decoder layers (features.compile); the LESS-style loop stays eager")
    p.add_argument("--no-loop", action="store_true",
                   help="--defaults: time ours alone (the LESS-style loop does not depend on --kind or --compile)")
    p.add_argument("--defaults", action="store_true",
                   help="what the features stage runs with features.device auto (--device auto, default settings)")
    args = p.parse_args(argv)
    if args.defaults:
        return run_defaults(args)
    apply_threads(args.threads)
    device = resolve_device(args.device, "--device")
    amp = autocast_dtype(args.precision, device)
    size = SIZES[args.size or ("quick" if args.quick else "default")]
    n = args.examples or (64 if args.quick else 256)
    lo, hi = args.min_len or (32 if args.quick else 64), args.max_len or (128 if args.quick else 256)
    repeats = args.repeats or 3
    torch.manual_seed(args.seed)

    model = tiny_lora_model(size, r=args.r, seed=args.seed, attention=args.attention, device=device)
    if args.gradient_checkpointing:
        checkpoint_layers(model)
    resident = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0  # weights (and LoRA)
    sizes = [b.size for b in lora_blocks(model)]
    state = fake_adam_state(sum(sizes), args.seed, device)
    rows = synthetic_examples(n, size.vocab, lo, hi, seed=args.seed)
    batches = [{k: v.to(device) for k, v in collate([rows[i] for i in idx], pad_id=0).items()}
               for idx in length_batches([len(r) for r in rows], args.batch_size)]
    tokens = sum(len(r) for r in rows)
    padded = sum(b["input_ids"].numel() for b in batches)
    print(f"model {size}, LoRA r={args.r} on q/k/v/o: D={sum(sizes)} in {len(sizes)} blocks; {n} examples, "
          f"{tokens} tokens ({padded} with padding), {len(batches)} batches of <= {args.batch_size}; "
          f"sketch {args.kind} dim {args.sketch_dim}; {args.device} {args.precision}; {machine()}", flush=True)

    sync = device_sync(device)
    watch = Stopwatch(sync)
    sketch = BlockSketch(args.kind, args.seed, sizes, args.sketch_dim, device,
                         tf32=sketch_tf32_on(device, args.precision))  # as the features stage picks
    cold_start = time.perf_counter()
    sketch.project(torch.zeros(1, sum(sizes), device=device))
    sync()
    sketch_cold = time.perf_counter() - cold_start  # first call: generates (and caches) the random pieces
    extra = {} if args.kind != "rademacher" else {k: BlockSketch(k, args.seed, sizes, args.sketch_dim, device)
                                                   for k in EXTRA_KINDS}
    ours = Ours(model, sketch, state, watch, n, args.group_mib * MIB, amp, extra)
    methods = {"ours": ours, "less_loop": LessLoop(model, sizes, args.sketch_dim, args.seed, state, amp),
               "train_step": TrainStep(model, amp)}
    for method in methods.values():  # warm-up: one batch each, untimed (allocator, sketch caches)
        method(batches[0])
    ours.finish_pass()
    ours.run_extra()
    watch.total.clear()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    times = interleaved_passes(methods, batches, repeats, after=lambda name: ours.run_extra(), sync=sync)
    parts = {k: v / repeats for k, v in watch.total.items()}  # mean seconds per pass inside ours
    print("  ours, mean per pass: " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()), flush=True)
    figures = summarize(times, parts, n, tokens, list(extra))
    if device.type == "cuda":
        flops = model_flops(size, [tuple(b["input_ids"].shape) for b in batches],
                            [answer_positions(b["labels"]).numel() for b in batches])
        peak = args.peak_tflops or peak_tflops(torch.cuda.get_device_name(device), args.precision)
        ours_tflops = flops / (sum(times["ours"]) / repeats) / 1e12
        figures.update({"ours_model_tflops": ours_tflops, "peak_tflops": peak,
                        "fraction_of_peak": ours_tflops / peak if peak else float("nan"),
                        "gpu_peak_mem_gib": torch.cuda.max_memory_allocated(device) / (1 << 30),
                        # memory above the weights at the peak, per padded token of the largest batch
                        "gpu_mib_per_token": (torch.cuda.max_memory_allocated(device) - resident) / (1 << 20)
                        / max(b["input_ids"].numel() for b in batches)})
    figures.update({"sketch_kind": args.kind, "group_mib": args.group_mib, "sketch_cold_s": sketch_cold,
                    "examples": n, "tokens": tokens, "repeats": repeats, "threads": torch.get_num_threads(),
                    "device": args.device, "precision": args.precision, "sketch_tf32": sketch.tf32,
                    "size": args.size or "", "quick": args.quick,
                    "attention": args.attention, "gradient_checkpointing": args.gradient_checkpointing})
    print(result_line(figures), flush=True)


def run_defaults(args: argparse.Namespace) -> None:
    """``--defaults``: the features stage's own extraction at its defaults against the LESS-style loop."""
    size = SIZES[args.size or ("quick" if args.quick else "default")]
    n = args.examples or (64 if args.quick else 256)
    lo, hi = args.min_len or (32 if args.quick else 64), args.max_len or (128 if args.quick else 256)
    repeats = args.repeats or 3
    run = defaults_run(size, args.device, n, lo, hi, r=args.r, seed=args.seed, kind=args.kind,
                       sketch_dim=args.sketch_dim, batch_threads=args.batch_threads,
                       gradient_checkpointing=args.gradient_checkpointing, padding_mask=args.padding_mask,
                       compile=args.compile)
    device, rows, ctx, shapes = run.device, run.rows, run.ctx, run.shapes
    sizes = [b.size for b in lora_blocks(ctx.model)]
    tokens = sum(len(r) for r in rows)
    print(f"model {size}, LoRA r={args.r} on q/k/v/o: D={sum(sizes)}; {n} examples, {tokens} tokens "
          f"({sum(b * t for b, t in shapes)} padded) in {len(shapes)} batches of <= {run.batch_tokens} tokens; "
          f"{device} {run.precision} sdpa, {run.workers} batch threads; sketch {args.kind} dim {args.sketch_dim}; "
          f"{machine()}", flush=True)
    sync = device_sync(device)
    loop = LessLoop(ctx.model, sizes, args.sketch_dim, args.seed, (ctx.adam.exp_avg, ctx.adam.exp_avg_sq), ctx.autocast)
    loop_batches = [{k: v.to(device) for k, v in collate([rows[i] for i in idx], pad_id=0).items()}
                    for idx in length_batches([len(r) for r in rows], args.batch_size)]

    def less_loop() -> None:  # eager, as LESS runs, also where ours is compiled
        with torch_threads(resolve_threads(0) if device.type == "cpu" else 0), torch.compiler.set_stance("force_eager"):
            for batch in loop_batches:
                loop(batch)

    methods = (("ours", run),) if args.no_loop else (("ours", run), ("less_loop", less_loop))
    for _, method in methods:  # warm-up, untimed
        method()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: dict[str, list[float]] = {name: [] for name, _ in methods}
    for rep in range(repeats):
        for name, method in methods[:: 1 if rep % 2 == 0 else -1]:
            sync()
            start = time.perf_counter()
            method()
            sync()
            times[name].append(time.perf_counter() - start)
        print(f"  pass {rep + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    ours_s = sum(times["ours"]) / repeats
    figures: dict[str, object] = {"ours_s": ours_s}
    if not args.no_loop:
        loop_s = sum(times["less_loop"]) / repeats
        figures.update({"less_loop_s": loop_s, "speedup_vs_less_loop": loop_s / ours_s})
    figures.update({"ours_ex_per_s": n / ours_s, "ours_tok_per_s": tokens / ours_s})
    if device.type == "cuda":
        flops = model_flops(size, shapes)
        peak = args.peak_tflops or peak_tflops(torch.cuda.get_device_name(device), run.precision)
        figures.update({"ours_model_tflops": flops / ours_s / 1e12, "peak_tflops": peak,
                        "fraction_of_peak": flops / ours_s / 1e12 / peak if peak else float("nan"),
                        "gpu_peak_mem_gib": torch.cuda.max_memory_allocated(device) / (1 << 30),
                        "gpu_mib_per_token": (torch.cuda.max_memory_allocated(device) - run.resident) / (1 << 20)
                        / max(b * t for b, t in shapes)})
    figures.update({"defaults": True, "batch_tokens": run.batch_tokens, "group_mib": run.group_mib,
                    "workers": run.workers, "sketch_kind": args.kind,
                    "examples": n, "tokens": tokens, "repeats": repeats, "device": str(device),
                    "precision": run.precision, "sketch_tf32": ctx.sketch.tf32, "size": args.size or "",
                    "quick": args.quick, "attention": "sdpa",
                    "gradient_checkpointing": args.gradient_checkpointing, "padding_mask": not run.causal_only,
                    "compiled": run.compiled})
    print(result_line(figures), flush=True)


def summarize(times: dict[str, list[float]], parts: dict[str, float], n: int, tokens: int,
              extra_kinds: list[str]) -> dict[str, object]:
    """The result figures from per-pass method times and ours' per-part times (seconds per pass).

    Interleaved passes see the same load, so whole totals are compared (a per-method median could pick passes
    taken under different load).
    """
    per_pass = {name: sum(t) / len(t) for name, t in times.items()}
    own = parts["grads"] + parts["adam"] + parts["sketch"]
    figures: dict[str, object] = {
        "speedup_vs_less_loop": per_pass["less_loop"] / per_pass["ours"],
        "ratio_vs_train_step": per_pass["train_step"] / per_pass["ours"],
        "sketch_share": parts["sketch"] / own,
    }
    for name in ("ours", "less_loop", "train_step"):
        figures[f"{name}_ex_per_s"] = n / per_pass[name]
        figures[f"{name}_tok_per_s"] = tokens / per_pass[name]
    figures["grads_share"] = parts["grads"] / own
    rest = parts["grads"] + parts["adam"]
    for kind in extra_kinds:  # the same features through another kind: its share of a pass that used it
        t = parts[f"sketch_{kind}"]
        figures[f"sketch_share_{kind}"] = t / (rest + t)
        figures[f"ratio_vs_train_step_{kind}"] = per_pass["train_step"] / (per_pass["ours"] - parts["sketch"] + t)
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
