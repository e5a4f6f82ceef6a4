"""Helpers shared by the benchmark scripts: tiny models, synthetic data, timing, peak memory, the result line.

Every benchmark prints its figures as its last line, ``key=value`` pairs separated by spaces, and measures the
things it compares side by side in one process run (ratios, never absolute timings taken in separate runs).
Run the scripts from the repository root with the project's interpreter, e.g. ``.venv/bin/python
benchmarks/extract.py --quick``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # the library's progress bars (training, scoring) off
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' weight-loading bar off
warnings.filterwarnings("ignore", category=FutureWarning)  # deprecations inside transformers/peft, not ours

import numpy as np  # noqa: E402
import torch  # noqa: E402

GIB = 1 << 30


# ------------------------------------------------------------------------------------------------ models and data
@dataclass(frozen=True)
class ModelSize:
    """A random-init Llama shape. ``default`` and ``quick`` are the two sizes the benchmarks use."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    kv_heads: int = 0  # 0: half the query heads

    @property
    def key_value_heads(self) -> int:
        return self.kv_heads or max(1, self.heads // 2)

    def linear_params(self) -> int:
        """Weights of the matmuls a token goes through: attention, MLP, and the LM head (no embedding lookup)."""
        head_dim = self.hidden // self.heads
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.key_value_heads * head_dim
        return self.layers * (attention + 3 * self.hidden * self.intermediate) + self.vocab * self.hidden


DEFAULT_SIZE = ModelSize(hidden=256, layers=4, heads=8, intermediate=688, vocab=1024)
QUICK_SIZE = ModelSize(hidden=128, layers=2, heads=4, intermediate=344, vocab=512)
# Llama-3.2-1B's shape (grouped-query attention, 8 KV heads) with a 32k vocabulary: 1.0e9 parameters
LLAMA_1B_SIZE = ModelSize(hidden=2048, layers=16, heads=32, intermediate=8192, vocab=32000, kv_heads=8)
# Llama-2-7B's shape (full multi-head attention, 11008 MLP, 32k vocabulary), LESS's selector: 6.7e9 parameters
LLAMA2_7B_SIZE = ModelSize(hidden=4096, layers=32, heads=32, intermediate=11008, vocab=32000, kv_heads=32)
SIZES = {"quick": QUICK_SIZE, "default": DEFAULT_SIZE, "1b": LLAMA_1B_SIZE, "7b": LLAMA2_7B_SIZE}
ATTENTION = ("eager", "sdpa")
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def tiny_lora_model(size: ModelSize, r: int = 8, seed: int = 0, attention: str = "eager",
                    device: torch.device | str = "cpu") -> torch.nn.Module:
    """A random-init ``LlamaForCausalLM`` of ``size`` (``attention``: HF's eager attention, as the figures in
    docs/benchmarks.md were taken, or torch's SDPA, what the features stage loads; fp32) wrapped with LoRA on q/k/v/o.

    Half as many key/value heads as query heads (as :func:`inflow.models.factory.build_tiny_model` builds) unless
    the size says otherwise. The weights are created and initialised on ``device`` (a 7B model's random init takes
    seconds on a GPU, minutes on a CPU; the values differ between devices, which no figure depends on).

    LoRA goes through :func:`inflow.models.loading.apply_lora` with the project's own ``LoraConfig`` (only ``r``
    changed), so the adapters are the ones the pipeline builds. ``lora_B`` is zero after peft's init, which would
    make every ``lora_A`` gradient zero; it is filled with small random values so all gradients are generic.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from inflow.config import LoraConfig
    from inflow.models.loading import apply_lora

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=size.vocab, hidden_size=size.hidden, intermediate_size=size.intermediate,
                         num_hidden_layers=size.layers, num_attention_heads=size.heads,
                         num_key_value_heads=size.key_value_heads, max_position_embeddings=4096,
                         tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         attn_implementation=attention)
    with torch.device(device):
        base = LlamaForCausalLM(config)
    model = apply_lora(base, LoraConfig(r=r, target_modules=LORA_TARGETS))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.02)
    model.eval()
    return model


def synthetic_examples(n: int, vocab: int, min_len: int, max_len: int, seed: int = 0) -> list:
    """``n`` :class:`inflow.data.batching.Encoded` rows of random tokens, lengths uniform in [min_len, max_len].

    Labels are the tokens on the second half of each sequence (the "answer") and -100 on the first half.
    Token ids avoid 0-2 (pad, bos, eos).
    """
    from inflow.data.batching import IGNORE_INDEX, Encoded

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = int(rng.integers(min_len, max_len + 1))
        ids = rng.integers(3, vocab, size=length).tolist()
        half = length // 2
        labels = [IGNORE_INDEX] * half + ids[half:]
        rows.append(Encoded(ids, labels, example_id=f"ex{i:07d}"))
    return rows


# ------------------------------------------------------------------------------------------------ timing and memory
class Stopwatch:
    """Accumulates wall time under named labels: ``with sw("sketch"): ...``; ``sw.total["sketch"]`` in seconds.

    ``sync`` runs before each clock reading (``torch.cuda.synchronize`` on a GPU, whose kernels run
    asynchronously: without it the time of a step would be charged to whichever later step waits for it).
    """

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.total: dict[str, float] = {}
        self.sync = sync or (lambda: None)

    @contextmanager
    def __call__(self, label: str) -> Iterator[None]:
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.total[label] = self.total.get(label, 0.0) + time.perf_counter() - start


def device_sync(device: torch.device) -> Callable[[], None]:
    """A function that waits for ``device``'s queued kernels (a no-op on CPU)."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    """``(seconds, result)`` of one call of ``fn``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far, GiB.

    Linux: ``VmHWM`` from ``/proc/self/status``, the high-water mark of this process's own address space.
    ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used there because it survives ``execve``: a child started by
    ``subprocess`` (vfork + exec) reports at least its parent's peak. Elsewhere ``ru_maxrss`` (bytes on macOS).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / GIB  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / GIB if platform.system() == "Darwin" else peak * 1024 / GIB


class SavedActivations:
    """Bytes of the distinct tensors a gradient pass keeps for its backward: what autograd saves (a
    ``saved_tensors_hooks`` pack hook sees each) plus the first-forward inputs of the ``held`` modules (for
    :func:`inflow.gradients.per_example.per_example_grads`: its :func:`~inflow.gradients.per_example.lora_linears`,
    whose inputs it holds until their gradient arrives); the model's own
    parameters and buffers are not counted (they are resident anyway). Device-independent up to what attention
    kernels save, so a CPU measures what a GPU pass holds per token.

    ``with SavedActivations(model, held) as saved: <one pass>`` then ``saved.bytes``. Distinct storages are counted once
    (a view or a detached alias is its base's bytes) and held until the block exits, so no address is reused.
    """

    def __init__(self, model: torch.nn.Module, held: list[torch.nn.Module] = ()) -> None:
        self.model = model
        self.held = list(held)
        self.skip = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
        self.storages: dict[int, torch.UntypedStorage] = {}
        self.ran: set[int] = set()
        self.bytes = 0

    def note(self, tensor: object) -> object:
        if isinstance(tensor, torch.Tensor) and tensor.layout == torch.strided:
            storage = tensor.untyped_storage()
            if storage.nbytes() and storage.data_ptr() not in self.skip:
                self.storages[storage.data_ptr()] = storage
        return tensor

    def _held(self, module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        if id(module) not in self.ran:  # a later call is a forward recomputed in the backward (checkpointing)
            self.ran.add(id(module))
            self.note(args[0])  # (returning it would replace the module's output)

    def __enter__(self) -> SavedActivations:
        held = torch.compiler.disable(self._held)  # a graph break in compiled layers, as the library's hooks
        self.handles = [m.register_forward_hook(held) for m in self.held]
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.note, lambda t: t)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hooks.__exit__(*exc)
        for handle in self.handles:
            handle.remove()
        self.bytes = sum(storage.nbytes() for storage in self.storages.values())
        self.storages.clear()


def machine() -> str:
    """A short description of where the figures were taken (CPU count, torch threads, GPU if any)."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return f"cpus={os.cpu_count()} torch_threads={torch.get_num_threads()} gpu={gpu.replace(' ', '_')}"


# ------------------------------------------------------------------------------------------------ command line
def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the ``--quick`` and ``--threads`` options every benchmark has."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a small configuration that finishes in under a minute")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads, here and in child processes (default 1, as features.threads; "
                        "0: torch's default, one per core)")
    return p


def apply_threads(threads: int) -> None:
    """Set torch's thread count for this process and, through ``OMP_NUM_THREADS``, for its children (0: leave it).

    One thread is the default because on a small shared machine an intra-op thread that loses its core to
    another process stalls every parallel region: with 2 threads on 2 busy cores, runs were several times slower
    and far noisier than with 1.
    """
    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def fmt(value: object) -> str:
    """Numbers to 4 significant digits; everything else as ``str`` with spaces replaced (one token per value)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value).replace(" ", "_")


def result_line(figures: dict[str, object]) -> str:
    """The last line a benchmark prints: ``key=value`` pairs separated by single spaces."""
    return " ".join(f"{key}={fmt(value)}" for key, value in figures.items())


# ------------------------------------------------------------------------------------------------ GPU figures
# Dense peak TFLOP/s (no sparsity) by GPU name and precision, from the vendors' data sheets. fp32 is the non-tensor
# core figure: torch runs float32 matmuls without TF32 unless told otherwise.
PEAK_TFLOPS = {
    "H100 PCIe": {"bfloat16": 756.0, "float16": 756.0, "float32": 51.0},
    "H100": {"bfloat16": 989.4, "float16": 989.4, "float32": 66.9},  # SXM; also H100 80GB HBM3
    "H200": {"bfloat16": 989.4, "float16": 989.4, "float32": 66.9},
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5},
}


def peak_tflops(device_name: str, precision: str) -> float:
    """The dense peak of the GPU called ``device_name`` at ``precision``; 0.0 when it is not in the table."""
    for key, peaks in PEAK_TFLOPS.items():  # most specific names first
        if key in device_name:
            return peaks[precision]
    return 0.0


def model_flops(size: ModelSize, batch_shapes: list[tuple[int, int]], head_positions: list[int] | None = None) -> float:
    """Matmul FLOPs of one forward and one activation backward over padded batches ``[(B, T), ...]``.

    Base weights are frozen, so the backward computes input gradients only: ``2 P`` FLOPs per token forward and
    ``2 P`` backward, with ``P`` = :meth:`ModelSize.linear_params` (``4 P T`` in all, where a full training step
    is the usual ``6 P T``), less the input gradients of the first layer's q/k/v projections (their input, the
    embedding, needs none). ``head_positions[i]``: the positions of batch i whose logits are computed (default
    all ``T``; the extraction computes them at answer positions only). Eager attention adds ``4 T^2 h`` per layer
    and sequence forward (``Q K^T`` and ``A V``) and twice that backward. LoRA's own matmuls (rank r) and
    elementwise work are left out, so the fraction of peak derived from this is a lower bound (checked against
    torch's FLOP counter in the tests).
    """
    head_dim = size.hidden // size.heads
    first_qkv = size.hidden * (size.hidden + 2 * size.key_value_heads * head_dim)
    head = size.vocab * size.hidden
    kept = head_positions or [t for _, t in batch_shapes]
    body = 4 * (size.linear_params() - head) - 2 * first_qkv
    linear = sum(body * b * t + 4 * head * b * p for (b, t), p in zip(batch_shapes, kept))
    attention = sum(12 * size.layers * size.hidden * b * t * t for b, t in batch_shapes)
    return float(linear + attention)
