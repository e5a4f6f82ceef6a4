"""Where a defaults extraction spends its time: a ``torch.profiler`` profile split by phase and by kind of operator.

Runs the features stage's extraction at its defaults (as ``extract.py --defaults``, :mod:`_defaults`) once untimed,
then once under the profiler, and attributes every operator's own time to

- a **phase**, from the innermost :func:`inflow.profiling.region` around it: ``forward`` (the decoder),
  ``head`` (LM head and cross-entropy at answer positions), ``backward`` (autograd's engine: the decoder's and the
  head's backward, recomputed forwards under checkpointing), ``outer_products`` (the per-example LoRA gradients,
  inside the backward; with ``--compile`` they run inside the compiled backward, in ``backward``), ``features``
  (Adam), ``sketch`` (the projection), ``other`` (batching, copies out);
- a **kind**, from the operator's name: ``gemm`` (mm, addmm, bmm, ...), ``attention`` (SDPA's kernels, softmax),
  ``loss`` (log-softmax, NLL), ``copy`` (casts, copies, concatenation, indexing, fills), ``elementwise`` (every
  other operator: norms, residual adds, rotary, SiLU, Adam's arithmetic), ``fused`` (what compiled layers run,
  ``--compile``: inductor's generated kernels; on a CPU a compiled graph's whole call, its matmuls included), on a
  GPU ``kernel`` (other kernels launched outside any operator: the fused Triton sketch), on a CPU ``host`` (Python
  between operators, autograd's bookkeeping, views, the compiler's guards).

On a GPU the time is the kernels' (each kernel counted under the operator that launched it), the figures add
``device_busy`` (the union of kernel intervals over the profiled call's wall time: below 1 the GPU waited for the
host) and ``gemm_tflops`` (the model's matmul FLOPs, :func:`_common.model_flops`, over the forward, head and
backward phases' gemm time: how fast the matmuls themselves run). On a CPU it is each operator's own CPU time on
the profiling thread, one batch at a time (the profiler follows autograd's threads, not the features stage's own
batch threads: ``--batch-threads 0`` would profile little but the waiting). The table prints shares of the total,
rows phases and columns kinds; the last line holds ``kind_<kind>`` and ``phase_<phase>`` shares and, on a GPU,
``attributed`` (the share of all kernel time that found its launching operator; the rest is in no row).
``--trace FILE`` (``.json`` or ``.json.gz``) writes the profile for chrome://tracing or Perfetto.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from _common import SIZES, device_sync, machine, model_flops, parser, peak_tflops, result_line
from _defaults import defaults_run
from inflow.profiling import PREFIX

PHASES = ("forward", "head", "backward", "outer_products", "features", "sketch", "other")
KINDS = ("gemm", "attention", "loss", "copy", "elementwise", "fused", "kernel", "host")
# what compiled layers run (features.compile): a compiled graph's call on a CPU, inductor's Triton kernels on a GPU
FUSED = ("## Call CompiledFxGraph", "triton_poi_", "triton_red_", "triton_per_", "triton_tem_", "cpp_fused")
GEMM = {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::addbmm", "aten::_scaled_mm",
        "aten::_int_mm", "aten::matmul", "aten::linear", "aten::einsum", "aten::addmv", "aten::mv", "aten::dot"}
ATTENTION = ("scaled_dot_product", "flash_attention", "efficient_attention", "cudnn_attention", "aten::_softmax",
             "aten::softmax", "aten::_softmax_backward_data")
LOSS = ("log_softmax", "nll_loss", "cross_entropy")
COPY = {"aten::copy_", "aten::_to_copy", "aten::to", "aten::clone", "aten::contiguous", "aten::cat", "aten::stack",
        "aten::index", "aten::index_select", "aten::index_put_", "aten::_index_put_impl_", "aten::gather",
        "aten::scatter", "aten::scatter_add_", "aten::fill_", "aten::zero_", "aten::zeros", "aten::zeros_like",
        "aten::empty", "aten::embedding", "aten::embedding_dense_backward", "aten::pad", "aten::constant_pad_nd",
        "aten::masked_fill", "aten::masked_fill_", "aten::nonzero", "aten::where"}
# operators that only make a new view or tensor header: on a CPU their time is the dispatcher's, the host's
VIEWS = {"aten::view", "aten::_unsafe_view", "aten::reshape", "aten::_reshape_alias", "aten::t", "aten::transpose",
         "aten::permute", "aten::expand", "aten::slice", "aten::select", "aten::as_strided", "aten::unsqueeze",
         "aten::squeeze", "aten::detach", "aten::detach_", "aten::alias", "aten::lift_fresh", "aten::split",
         "aten::chunk", "aten::narrow", "aten::unbind", "aten::empty_strided", "aten::empty_like",
         "aten::resolve_conj", "aten::resolve_neg", "aten::numpy_T", "aten::flatten", "aten::result_type"}
ENGINE = "autograd::engine::evaluate_function"


def kind_of(name: str, on_device: bool = True) -> str:
    """The kind of operator an event named ``name`` is (one of :data:`KINDS`); ``on_device``: the time counted is
    its kernels' (else its own CPU time, where views and autograd's bookkeeping are the host's)."""
    if name in GEMM:
        return "gemm"
    if any(key in name for key in ATTENTION):
        return "attention"
    if any(key in name for key in LOSS):
        return "loss"
    if name in COPY or name.startswith(("Memcpy", "Memset")):
        return "copy"
    if name.startswith(FUSED):
        return "fused"
    is_op = name.startswith(("aten::", "c10d::", "torch::")) and not name.startswith("torch::autograd::")
    if on_device:
        return "elementwise" if is_op else "kernel"  # a kernel launched by Python in a region (Triton)
    return "elementwise" if is_op and name not in VIEWS else "host"


def phase_of(event: Any) -> str:
    """The phase of ``event``: its own or innermost enclosing ``inflow.`` region, autograd's engine as ``backward``
    where no region is nearer (on a GPU the backward runs on autograd's own thread, outside our regions)."""
    node = event
    while node is not None:
        if node.name.startswith(PREFIX):
            phase = node.name[len(PREFIX):]
            return phase if phase in PHASES else "other"
        if node.name.startswith(ENGINE):
            return "backward"
        node = node.cpu_parent
    return "other"


def attribute(events: Iterable[Any], on_device: bool) -> dict[tuple[str, str], float]:
    """Seconds per (phase, kind), from the host-side events of a profile (their parents linked).

    ``on_device``: the kernels each event launched itself (``event.kernels``, microseconds); else the event's own
    CPU time (``self_cpu_time_total``, children excluded): a region's own CPU time is Python between operators,
    an autograd node's its bookkeeping, a view's the dispatcher's (``host``).
    """
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for event in events:
        if event.device_type != DeviceType.CPU or event.is_async:
            continue
        own = sum(k.duration for k in event.kernels) if on_device else event.self_cpu_time_total
        if own <= 0:
            continue
        kind = kind_of(event.name, on_device)
        totals[(phase_of(event), kind)] += own / 1e6
    return dict(totals)


def device_intervals(events: Iterable[Any]) -> list[tuple[float, float]]:
    """Start and end (microseconds) of every device-side activity of a profile (kernels, copies, fills; not the
    device-side copies of annotations, which span the gaps between their kernels)."""
    return [(e.time_range.start, e.time_range.end) for e in events
            if e.device_type != DeviceType.CPU and not getattr(e, "is_user_annotation", False)
            and not e.name.startswith(PREFIX)
            and e.time_range.end > e.time_range.start]


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``[start, end)`` intervals (overlapping kernels on several streams count once)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def table(totals: dict[tuple[str, str], float]) -> str:
    """Shares of the total time, rows :data:`PHASES`, columns :data:`KINDS`, with row and column sums."""
    whole = sum(totals.values()) or 1.0
    kinds = [k for k in KINDS if any(totals.get((p, k), 0) for p in PHASES)]
    lines = [f"{'phase':<16}" + "".join(f"{k:>12}" for k in kinds) + f"{'all':>12}"]
    for p in PHASES:
        row = [totals.get((p, k), 0.0) / whole for k in kinds]
        lines.append(f"{p:<16}" + "".join(f"{v:>12.1%}" for v in row) + f"{sum(row):>12.1%}")
    cols = [sum(totals.get((p, k), 0.0) for p in PHASES) / whole for k in kinds]
    lines.append(f"{'all':<16}" + "".join(f"{v:>12.1%}" for v in cols) + f"{sum(cols):>12.1%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--size", choices=sorted(SIZES), help="model shape (default: default; quick with --quick)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--examples", type=int, help="number of examples (default 128, quick 32)")
    p.add_argument("--min-len", type=int, help="shortest sequence (default 64, quick 32)")
    p.add_argument("--max-len", type=int, help="longest sequence (default 256, quick 128)")
    p.add_argument("--kind", default="rademacher", choices=("rademacher", "sparse_jl", "hadamard"))
    p.add_argument("--sketch-dim", type=int, default=8192)
    p.add_argument("--r", type=int, default=8, help="LoRA rank")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-threads", type=int, default=1,
                   help="gradient batches at once on a CPU (default 1: the profiler does not see our batch threads)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--padding-mask", action="store_true", help="keep the padding mask on a GPU")
    p.add_argument("--compile", action="store_true", help="compile the decoder layers (features.compile)")
    p.add_argument("--peak-tflops", type=float, help="the GPU's peak TFLOP/s (default: looked up)")
    p.add_argument("--trace", help="write the profile here (.json or .json.gz: chrome://tracing, Perfetto)")
    args = p.parse_args(argv)
    size = SIZES[args.size or ("quick" if args.quick else "default")]
    run = defaults_run(size, args.device, args.examples or (32 if args.quick else 128),
                       args.min_len or (32 if args.quick else 64), args.max_len or (128 if args.quick else 256),
                       r=args.r, seed=args.seed, kind=args.kind, sketch_dim=args.sketch_dim,
                       batch_threads=args.batch_threads, gradient_checkpointing=args.gradient_checkpointing,
                       padding_mask=args.padding_mask, compile=args.compile)
    on_device = run.device.type == "cuda"
    shapes = run.shapes
    print(f"model {size}; {len(run.rows)} examples in {len(shapes)} batches of <= {run.batch_tokens} tokens; "
          f"{run.device} {run.precision}, {run.workers} batch threads; sketch {args.kind}; {machine()}", flush=True)
    sync = device_sync(run.device)
    run()  # warm-up, untimed: allocator, sketch caches, Triton's compilation
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_device else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        run()
        sync()
        wall = time.perf_counter() - start
    events = prof.events()
    totals = attribute(events, on_device)
    print(table(totals), flush=True)
    whole = sum(totals.values())
    figures: dict[str, object] = {"wall_s": wall, "profiled_s": whole}
    for k in KINDS:
        figures[f"kind_{k}"] = sum(totals.get((ph, k), 0.0) for ph in PHASES) / whole
    for ph in PHASES:
        figures[f"phase_{ph}"] = sum(totals.get((ph, k), 0.0) for k in KINDS) / whole
    if on_device:
        intervals = device_intervals(events)
        busy = union_length(intervals) / 1e6
        kernel_s = sum(end - start for start, end in intervals) / 1e6
        model_gemm = sum(totals.get((ph, "gemm"), 0.0) for ph in ("forward", "head", "backward"))
        flops = model_flops(size, shapes)
        peak = args.peak_tflops or peak_tflops(torch.cuda.get_device_name(run.device), run.precision)
        figures.update({"device_busy": busy / wall, "attributed": whole / kernel_s if kernel_s else 0.0,
                        "gemm_tflops": flops / model_gemm / 1e12 if model_gemm else 0.0,
                        "model_tflops": flops / wall / 1e12, "peak_tflops": peak,
                        "fraction_of_peak": flops / wall / 1e12 / peak if peak else float("nan")})
    if args.trace:
        prof.export_chrome_trace(args.trace)
    figures.update({"size": args.size or ("quick" if args.quick else "default"), "device": str(run.device),
                    "precision": run.precision, "sketch_kind": args.kind, "batch_tokens": run.batch_tokens,
                    "workers": run.workers, "examples": len(run.rows), "batches": len(shapes),
                    "gradient_checkpointing": args.gradient_checkpointing, "padding_mask": not run.causal_only,
                    "compiled": run.compiled})
    print(result_line(figures), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
