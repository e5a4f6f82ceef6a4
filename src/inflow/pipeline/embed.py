"""The ``embed`` step: Influence Distillation's JVP embeddings of every row, into stores like the gradient stores.

An :class:`EmbedJob` fills one store (the pool, or one target task's validation rows) through the same machinery
as the features step (:mod:`inflow.pipeline.stores`: ``open_store`` / ``extract_chunk`` / ``extract_store``): the
same chunking, fan-out, resume after a kill, growth when the pool gains rows, checksums, and identity checks. Only
the per-chunk computation differs (:class:`EmbedContext`): the selector *base* model (no adapter: the embedding
is a property of the pretrained model, so it does not wait for warmup), eager attention (forward-mode AD), the
JVP embedding of :func:`inflow.methods.distill.jvp_embeddings`, then one block sketch to ``distill.embed_dim``
(never widening: ``K * hidden <= embed_dim`` is stored as is).

A store's rows are unit-normalised with their norms kept, as every store's; propagation reads them back raw
(``read_all(raw=True)``), since the RBF kernel needs distances, not angles.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

import inflow
from inflow.config import DataConfig, DistillConfig, FeaturesConfig, SketchConfig
from inflow.data.batching import Encoded, collate, length_batches
from inflow.data.targets import target_sources
from inflow.devices import resolve_device
from inflow.methods.distill import block_parameters, embedding_positions, jvp_embeddings, tangent_directions
from inflow.methods.distill.embed import backbone_of
from inflow.models.loading import load_causal_lm, model_fingerprint, resolve_model_dir
from inflow.models.tokenizer import load_tokenizer, pad_token_id
from inflow.paths import POOL_SPLIT, embed_store_path
from inflow.pipeline.stores import StoreContext, encode_split
from inflow.pipeline.stores import main as run_job
from inflow.sketch import BlockSketch
from inflow.store import StoreAttrs
from inflow.store.attrs import FEATURE_FORMAT

EMBED_CHECKPOINT = "base"  # the attrs' checkpoint field: embeddings come from the base model, no adapter


@dataclass(frozen=True)
class EmbedJob:
    """One embedding store to fill: the rows of ``split`` (``pool``, or target task ``task``)."""

    base_model: str  # the selector model (from_pretrained directory)
    split: str
    task: str | None
    store: str
    pool: str
    targets: str
    max_seq_len: int
    embed_blocks: int
    tangents: int
    seed: int
    embed_dim: int
    sketch_kind: str
    batch_size: int
    chunk_rows: int
    threads: int = 1
    device: str = "cpu"
    targets_format: str = "jsonl"
    label_newline: bool = True
    rows: str = ""  # unused (every row of the split); present so the shared row loader reads both job types

    def context(self) -> EmbedContext:
        return EmbedContext(self)

    def to_json(self) -> str:
        """The job as a JSON object (for ``python -m inflow.pipeline.embed --job``)."""
        return json.dumps(asdict(self), indent=2)


class EmbedContext(StoreContext):
    """The model, tangents and sketch of an :class:`EmbedJob`; built once per process and job."""

    def __init__(self, job: EmbedJob) -> None:
        tokenizer = load_tokenizer(resolve_model_dir(job.base_model))
        self._set_rows(encode_split(job, tokenizer))
        self.pad_id = pad_token_id(tokenizer)
        self.device = resolve_device(job.device)
        # float32 whatever features.precision says: forward-mode AD under autocast is not supported everywhere
        self.model = load_causal_lm(job.base_model, attn_implementation="eager").to(self.device).eval()
        self.n_blocks = job.embed_blocks
        self.tangents = tangent_directions(block_parameters(self.model, job.embed_blocks), job.tangents, job.seed)
        width = job.tangents * backbone_of(self.model).config.hidden_size
        self.sketch = BlockSketch(job.sketch_kind, job.seed, [width], job.embed_dim)
        self.attrs = StoreAttrs(
            model_id=str(job.base_model), model_hash=model_fingerprint(job.base_model),
            checkpoint=EMBED_CHECKPOINT, checkpoint_step=-1, lora_targets=(), feature_kind="jvp",
            sketch=self.sketch.to_attrs(), dim=self.sketch.out_dim, dtype="float32", n_rows=len(self.rows),
            chunk_rows=job.chunk_rows, data_hash=self.manifest.digest(), code_version=inflow.__version__,
            extraction={"embed_blocks": job.embed_blocks, "tangents": job.tangents, "tangent_seed": job.seed,
                        "batch_size": job.batch_size, "threads": self.intra_op_threads(job),
                        "device": self.device.type},
            feature_format=FEATURE_FORMAT)

    def intra_op_threads(self, job: EmbedJob) -> int:
        # torch intra-op threads, recorded (the bits depend on the count); 0, the features default, is one thread
        # here, so a default store's bytes do not depend on the machine's cores
        return job.threads or 1

    def featurize(self, rows: list[Encoded], job: EmbedJob) -> torch.Tensor:
        """Sketched embeddings of ``rows`` in row order: ``[len(rows), attrs.dim]`` float32 on the CPU."""
        out = torch.empty(len(rows), self.sketch.in_dim)
        for batch_idx in length_batches([len(r) for r in rows], job.batch_size):
            batch = {k: v.to(self.device) for k, v in collate([rows[i] for i in batch_idx], self.pad_id).items()}
            positions = embedding_positions(batch["labels"], batch["attention_mask"])
            emb = jvp_embeddings(self.model, batch["input_ids"], batch["attention_mask"], positions, self.tangents,
                                 self.n_blocks)
            out[torch.as_tensor(batch_idx)] = emb.float().cpu()
        return self.sketch.project(out)


def plan_embed_jobs(distill: DistillConfig, features: FeaturesConfig, sketch: SketchConfig, data: DataConfig,
                    split: str, base_model: str | Path) -> list[EmbedJob]:
    """The embedding stores of ``split``: one for the pool, one per target task. Extraction settings (batch size,
    chunk rows, threads, device) are the features stage's; the sketch kind is ``sketch.kind``."""
    tasks: list[str | None] = [None]
    if split != POOL_SPLIT:
        tasks = [source.name for source in target_sources(data.targets, data.targets_format)]
    return [EmbedJob(base_model=str(base_model), split=split, task=task, store=str(embed_store_path(split, task)),
                     pool=data.pool, targets=data.targets, max_seq_len=data.max_seq_len,
                     embed_blocks=distill.embed_blocks, tangents=distill.tangents, seed=distill.seed,
                     embed_dim=distill.embed_dim, sketch_kind=sketch.kind, batch_size=features.batch_size,
                     chunk_rows=features.chunk_rows, threads=features.threads, device=features.device,
                     targets_format=data.targets_format, label_newline=data.label_newline)
            for task in tasks]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m inflow.pipeline.embed --job job.json``: fill one embedding store without Prefect; rerun the same
    command to resume a killed run (exit 1 on a user error)."""
    return run_job(argv, EmbedJob, "inflow.pipeline.embed")


if __name__ == "__main__":
    raise SystemExit(main())
