"""The ``features`` step: per-example LoRA gradient features of every row, sketched, into Zarr stores.

One store per (checkpoint, split): the pool gets Adam features (the checkpoint's AdamW state applied to
the gradient, DESIGN §4), target validation rows get plain (SGD) gradients; Influence Distillation's landmark
rows get a ⊙ g (``FeatureJob.kind = "precond"``) and, for its second order, a target task's Hessian applied to
them (``FeatureJob.hvp_task``). :class:`FeatureContext` computes the rows of a chunk; filling, resuming, growing
and checking a store is :mod:`inflow.pipeline.stores`' (re-exported here: ``open_store``, ``extract_chunk``,
``extract_store``), shared with the other kinds of store.

Batches are cut by tokens (``features.batch_tokens``): every row is padded to its own bucket width
(:func:`~inflow.data.batching.bucket_width`) and a batch holds rows of one width up to the token budget. On a CPU
the batches run concurrently, one per thread (``features.threads``; 0: every core the process is given), each at
one torch intra-op thread (:mod:`inflow.parallel`).

Bit-identity: a store's bytes are a function of its job (model, checkpoint, data, settings), whatever the
order, number or placement of the processes that filled it, given the same hardware and software. On a CPU they
do not depend on ``features.threads``, ``features.batch_tokens`` or ``features.sketch_group_mib`` either
(tested): a row's computation has the same shapes whatever rows share its batch (its own width), runs on one
intra-op thread, and every product whose rows must be independent has at least 8 rows (MKL gives a matrix row
the same bits in any product of 4 rows or more: :data:`inflow.devices.MIN_PRODUCT_ROWS`). On a GPU they depend on
the token budget and the sketch group size (cuBLAS picks its kernel by shape), and a GPU pass drops the padding
mask (:func:`causal_only_on`) and multiplies the dense sketch in TF32 under bfloat16 (:func:`sketch_tf32_on`): the
store records those (:func:`extraction_settings`), with content hashes of the checkpoint
(:mod:`inflow.store.identity`), and refuses to be resumed or grown under other ones. Whether a GPU repeats its bits
from run to run depends on SDPA's fused backward kernels (atomics): ``benchmarks/determinism.py`` measures it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

import inflow
from inflow.data.batching import Encoded, bucket_width, collate, length_batches, token_batches
from inflow.devices import (
    autocast,
    autocast_dtype,
    default_batch_tokens,
    default_group_mib,
    module_bytes,
    resolve_device,
    resolve_precision,
)
from inflow.errors import InflowError
from inflow.gradients.blocks import keep_blocks, lora_blocks, lora_parameters
from inflow.gradients.checkpointing import checkpoint_layers
from inflow.gradients.compiling import compile_layers
from inflow.gradients.features import adam_features
from inflow.gradients.per_example import per_example_grads
from inflow.methods.in2core.layers import kept_blocks, parse_layers
from inflow.models.autocast import autocast_only
from inflow.models.loading import load_causal_lm, model_fingerprint, resolve_model_dir
from inflow.models.tokenizer import load_tokenizer, pad_token_id
from inflow.parallel import ordered_map, resolve_threads, single_thread_pool
from inflow.pipeline.feature_jobs import FeatureJob, checkpoints_for, job_summary, plan_jobs
from inflow.pipeline.stores import (
    StoreContext,
    StoreJob,
    encode_split,
    extract_chunk,
    extract_store,
    open_store,
    remove_stale_stores,
    row_manifest,
    select_rows,
    torch_threads,
)
from inflow.pipeline.stores import main as run_job
from inflow.profiling import region
from inflow.sketch import BlockSketch
from inflow.sketch.block import allocate_dims
from inflow.sketch.cache import MIB
from inflow.sketch.groups import SketchGroups
from inflow.store import StoreAttrs
from inflow.store.attrs import FEATURE_FORMAT
from inflow.store.identity import checkpoint_digests
from inflow.training.checkpoint import AdamState, load_adam_state, load_adapter_into

log = logging.getLogger(__name__)


__all__ = [
    "FeatureJob",
    "StoreContext",
    "StoreJob",
    "checkpoints_for",
    "encode_split",
    "extract_chunk",
    "extract_store",
    "featurize",
    "job_summary",
    "main",
    "open_store",
    "plan_jobs",
    "remove_stale_stores",
    "row_manifest",
    "select_rows",
    "torch_threads",
]


class FeatureContext(StoreContext):
    """Gradient features of a :class:`FeatureJob`; built once per process and job."""

    def __init__(self, job: FeatureJob) -> None:
        tokenizer = load_tokenizer(resolve_model_dir(job.base_model))
        self._set_rows(select_rows(encode_split(job, tokenizer), job.rows))
        self.pad_id = pad_token_id(tokenizer)
        self.device = resolve_device(job.device)
        self.precision = resolve_precision(job.precision, self.device)
        self.autocast = autocast_dtype(self.precision, self.device)
        model = load_adapter_into(load_causal_lm(job.base_model), job.checkpoint)
        if self.autocast is not None and not job.hvp_task:  # (the Hessian products run the model in float32)
            # 16-bit frozen weights; one 16-bit copy of an input for all its readers (compiled layers share it)
            autocast_only(model, self.autocast, share_casts=autocast_inputs_shared(job, self.precision))
        self.model = model.to(self.device)
        self.model.eval()
        self.batch_tokens = job.batch_tokens or default_batch_tokens(
            self.model.config, self.device, resident_bytes=module_bytes(self.model),
            checkpointing=job.gradient_checkpointing and not job.hvp_task)
        self.group_mib = job.sketch_group_mib or default_group_mib(self.device)
        # CPU: one batch per thread at one intra-op thread each (bits independent of the count); GPU: one stream.
        # Compiled layers run one batch at a time (the compiler's caches are process-wide, not made for threads)
        self.workers = resolve_threads(job.threads) if self.device.type == "cpu" and not compiled(job) else 1
        sketch_dim = job.sketch_dim
        if job.layers:  # only the kept layers, each projected to the share it has in an all-layer store
            if job.feature_kind != "sgd":
                raise InflowError(f"layers={job.layers!r}: only plain-gradient (sgd) stores keep a subset of the "
                                  "layers; Adam's state covers every parameter")
            sizes = [b.size for b in lora_blocks(self.model)]
            kept = kept_blocks(parse_layers(job.layers), len(sizes))
            shares = allocate_dims(sizes, job.sketch_dim)
            sketch_dim = sum(shares[b] for b in kept)
            keep_blocks(self.model, kept)
        params = lora_parameters(self.model)
        self.adam = None
        self.preconditioner = None
        if job.feature_kind in ("adam", "precond"):
            adam = load_adam_state(job.checkpoint, [(name, p.shape) for name, p in params])
            self.adam = dataclasses.replace(adam, exp_avg=adam.exp_avg.to(self.device),
                                            exp_avg_sq=adam.exp_avg_sq.to(self.device))
            if job.feature_kind == "precond":  # Influence Distillation's a (DESIGN §6), one vector for every row
                from inflow.methods.distill.adam import adam_preconditioner

                self.preconditioner = adam_preconditioner(self.adam.exp_avg_sq.float(), adam.step, adam.beta1,
                                                          adam.beta2, adam.eps)
        self.sketch = BlockSketch(job.sketch_kind, job.sketch_seed, [b.size for b in lora_blocks(self.model)],
                                  sketch_dim, tf32=sketch_tf32_on(self.device, self.precision))
        self.hvp_batches: list[dict[str, torch.Tensor]] = []
        extraction = extraction_settings(job, self.device, self.adam, self.batch_tokens, self.group_mib,
                                         self.precision)
        if job.hvp_task:  # the Hessian of this target task's loss, applied to every row's feature
            hvp_rows = encode_split(dataclasses.replace(job, split="targets", task=job.hvp_task), tokenizer)
            self.hvp_batches = [collate([hvp_rows[i] for i in b], self.pad_id)
                                for b in length_batches([len(r) for r in hvp_rows], job.batch_size)]
            extraction["hvp"] = {"task": job.hvp_task, "rows": row_manifest(hvp_rows).digest()}
            # one batch at a time: the Hessian product switches SDPA to its math backend with torch's process-wide
            # flags, which would change the kernel under a concurrent batch's forward (and could stay switched)
            self.workers = 1
        else:  # (neither under the Hessian products' double backward)
            if compiled(job):
                compile_layers(self.model)
            if job.gradient_checkpointing:  # wraps the compiled forward
                checkpoint_layers(self.model)
        adapter_hash, optimizer_hash = checkpoint_digests(job.checkpoint, optimizer=self.adam is not None)
        self.attrs = StoreAttrs(
            model_id=str(job.base_model), model_hash=model_fingerprint(job.base_model),
            checkpoint=Path(job.checkpoint).name, checkpoint_step=_step_of(job.checkpoint),
            lora_targets=tuple(sorted({n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in params})),
            feature_kind=job.feature_kind, sketch=self.sketch.to_attrs(), dim=self.sketch.out_dim,
            dtype=job.dtype, n_rows=len(self.rows), chunk_rows=job.chunk_rows, data_hash=self.manifest.digest(),
            code_version=inflow.__version__, precision=self.precision, adapter_hash=adapter_hash,
            optimizer_hash=optimizer_hash, extraction=extraction, feature_format=FEATURE_FORMAT)

    def featurize(self, rows: list[Encoded], job: FeatureJob) -> torch.Tensor:
        return featurize(self, rows, self.batch_tokens, job.eps_inside_sqrt, self.group_mib * MIB, self.workers)

    def intra_op_threads(self, job: FeatureJob) -> int:
        return 1 if self.device.type == "cpu" else 0  # CPU parallelism is one batch per thread (featurize)


BATCHING = "bucket-v1"  # rows padded to bucket_width, batches of one width (token_batches); recorded in stores


def causal_only_on(device: torch.device) -> bool:
    """Whether gradient passes on ``device`` drop the padding mask (right padding makes it redundant).

    On a GPU: SDPA then runs its causal flash kernel, which skips the masked half of the scores, instead of the
    kernel for an arbitrary mask (``benchmarks/extract.py --defaults --padding-mask`` measures the difference).
    On a CPU the mask stays, so CPU stores keep their bytes (their bit-identity across token budgets and threads
    was established, and is tested, on the masked path) and attention is a small part of a CPU pass.
    """
    return device.type == "cuda"


def sketch_tf32_on(device: torch.device, precision: str) -> bool:
    """Whether the dense Rademacher sketch multiplies in TF32 (``precision``: the one in use, not ``auto``).

    On a GPU under bfloat16/float16 autocast: TF32 rounds the features to 10 mantissa bits before the products
    (the signs are exact), an error of the order of a float16 store's own rounding and far below the gradients'
    bfloat16 rounding, and the fused kernel runs on tensor cores instead of the far slower IEEE float32 units.
    A float32 extraction keeps IEEE products.
    """
    return device.type == "cuda" and precision != "float32"


def autocast_inputs_shared(job: FeatureJob, precision: str) -> bool:
    """Whether the job's model is prepared for autocast (:func:`inflow.models.autocast.autocast_only`) with shared
    input casts: under bfloat16/float16 (``precision``: the one in use), except for Influence Distillation's Hessian
    products, which differentiate the model outside autocast, and for compiled layers (:func:`compiled`), where the
    compiler shares a cast within a layer's graph and the hooks would break it."""
    return precision != "float32" and not job.hvp_task and not compiled(job)


def compiled(job: FeatureJob) -> bool:
    """Whether the job's decoder layers are compiled (:mod:`inflow.gradients.compiling`): ``features.compile``,
    except under Influence Distillation's Hessian products (compiled graphs have no double backward)."""
    return job.compile and not job.hvp_task


def extraction_settings(job: FeatureJob, device: torch.device, adam: AdamState | None, batch_tokens: int,
                        group_mib: int, precision: str) -> dict:
    """The job's settings that the feature bytes depend on beyond the model, checkpoint, rows and sketch.

    Adam's betas/eps (read from the checkpoint) and where eps goes change the features themselves; the batching
    rule (padding widths) and, on a GPU, the token budget and the sketch group size change the floating-point
    summation order, so the bytes; the device type changes the kernels, and on a GPU so do the padding mask and the
    dense sketch's product precision (``batch_tokens``, ``group_mib``, ``precision``: the values in use, defaults
    resolved); under autocast, the shared 16-bit copies of the layers' inputs (:func:`autocast_inputs_shared`);
    compiled layers (:func:`compiled`), whose fused kernels round otherwise and, as generated code, are not known to
    give a row the same bits in every batch shape, so their token budget is recorded on a CPU too. Otherwise, on a
    CPU the thread count, the token budget, the sketch group size and where chunks run (threads, Dask workers) do
    not change the bytes (tested), so they are not recorded: a store grows or resumes under any of them.
    """
    settings: dict = {"batching": BATCHING, "device": device.type}
    if device.type != "cpu":  # cuBLAS and the fused kernel pick their kernels by shape
        settings |= {"batch_tokens": batch_tokens, "sketch_group_mib": group_mib}
    if compiled(job):
        settings |= {"compiled": True, "batch_tokens": batch_tokens}
    if causal_only_on(device):
        settings["padding_mask"] = False  # SDPA's causal kernel (other bits than the masked one)
    if autocast_inputs_shared(job, precision):
        settings["autocast_inputs"] = "shared"  # one 16-bit copy of a float32 input for all its readers
    if job.sketch_kind == "rademacher" and sketch_tf32_on(device, precision):
        settings["sketch_products"] = "tf32"
    if job.layers:
        settings["layers"] = job.layers
    if adam is not None and job.feature_kind == "adam":
        settings["adam"] = {"beta1": adam.beta1, "beta2": adam.beta2, "eps": adam.eps,
                            "eps_inside_sqrt": job.eps_inside_sqrt}
    if adam is not None and job.feature_kind == "precond":
        settings["adam"] = {"beta1": adam.beta1, "beta2": adam.beta2, "eps": adam.eps, "step": adam.step}
    return settings


def _step_of(checkpoint: str) -> int:
    tail = Path(checkpoint).name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def featurize(ctx: FeatureContext, rows: list[Encoded], batch_tokens: int, eps_inside_sqrt: bool,
              group_bytes: int, workers: int = 1, causal_only: bool | None = None) -> torch.Tensor:
    """Sketched features of ``rows`` in row order: [len(rows), sketch.out_dim] float32.

    Batches of at most ``batch_tokens`` padded tokens (:func:`~inflow.data.batching.token_batches`) run on
    ``workers`` threads (1: in this thread), in order; their features are projected ``group_bytes`` of rows at
    a time (see :mod:`inflow.sketch.groups`), the blocks of a group on the same threads. ``rows`` is one chunk,
    so the groups depend on the chunk alone. ``causal_only`` (None: :func:`causal_only_on`): the forward runs
    without the padding mask (:func:`~inflow.gradients.per_example.per_example_grads`).
    """
    batches = token_batches([len(r) for r in rows], batch_tokens)
    if causal_only is None:
        causal_only = causal_only_on(ctx.device)

    def batch_features(batch_idx: list[int]) -> torch.Tensor:
        batch = collate([rows[i] for i in batch_idx], ctx.pad_id, width=bucket_width(len(rows[batch_idx[0]])))
        # autocast covers the forward/backward (the per-example outer products too); Adam and the sketch run outside
        try:
            with autocast(ctx.device, ctx.autocast):
                grads, _losses = per_example_grads(ctx.model, batch, causal_only=causal_only)
        except (torch.OutOfMemoryError, RuntimeError) as err:
            if not out_of_memory(err):
                raise
            raise InflowError(out_of_memory_advice(tuple(batch["input_ids"].shape), batch_tokens, ctx.device)) from err
        with region("features"):
            if ctx.preconditioner is not None:
                grads = grads.float() * ctx.preconditioner  # a ⊙ g
            elif ctx.adam is not None:
                a = ctx.adam
                grads = adam_features(grads, a.exp_avg, a.exp_avg_sq, a.beta1, a.beta2, a.eps, eps_inside_sqrt)
            if ctx.hvp_batches:  # H_t Γ(z) for every row of the batch at once (batched double backward)
                from inflow.methods.distill.hessian import target_hvp

                grads = target_hvp(ctx.model, ctx.hvp_batches, grads.float())
            return grads.float()

    pool = single_thread_pool(workers, "inflow-batch") if workers > 1 else None
    try:
        groups = SketchGroups(ctx.sketch, torch.empty(len(rows), ctx.sketch.out_dim), group_bytes, executor=pool)
        for batch_idx, feats in zip(batches, ordered_map(pool, batch_features, batches, window=2 * workers)):
            groups.add(batch_idx, feats)
        return groups.finish()
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure: torch's on a GPU, the CPU allocator's RuntimeError on a CPU."""
    return isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in str(err)


def out_of_memory_advice(shape: tuple[int, int], batch_tokens: int, device: torch.device) -> str:
    """What to change when a gradient batch of ``shape`` (rows, padded tokens) ran out of memory on ``device``.

    The batch is not retried smaller here: on a GPU the token budget is part of the store's identity (it changes
    the floating-point summation order), so a store's batches must not depend on when memory ran short."""
    rows, width = shape
    lower = max(256, batch_tokens // 2 // 256 * 256)
    return (f"a gradient batch of {rows} rows x {width} tokens ({rows * width} of features.batch_tokens "
            f"{batch_tokens}) ran out of memory on {device}: set features.batch_tokens lower (e.g. {lower}), and/or "
            "features.gradient_checkpointing: true (a layer then keeps only its input, about an eighth of the "
            "activation memory, for half again the matmul work)" + (
                "; a GPU store records its token budget: the features stage rebuilds a store begun under another "
                "one" if device.type == "cuda" else ""))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m inflow.pipeline.features --job job.json``: fill one gradient store without Prefect (exit 1 on a
    user error). The job file is :meth:`FeatureJob.to_json`; rerun the same command to resume a killed run."""
    return run_job(argv, FeatureJob, "inflow.pipeline.features")


if __name__ == "__main__":
    raise SystemExit(main())
