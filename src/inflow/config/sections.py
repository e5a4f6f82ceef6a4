"""One frozen dataclass per params.yaml section; each field's comment is its help text.

Ranges are checked on construction, so a config object that exists is a valid one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from inflow.config.loader import require


def is_device(value: str) -> bool:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (a torch device name, or cuda-when-visible)."""
    return value in ("cpu", "cuda", "auto") or (value.startswith("cuda:") and value[5:].isdigit())


@dataclass(frozen=True)
class BenchmarkConfig:
    """The built-in synthetic benchmark (``prepare`` stage)."""

    seed: int = 0  # seeds the world, the pool and the target tasks
    pool_size: int = 6000  # rows in the training pool
    target_share: float = 0.3  # share of the pool drawn from the target skill families
    decoy_share: float = 0.2  # share of the pool that are lexical decoys (target words, no target skill)
    harmful_share: float = 0.1  # share of target-family pool rows given a wrong answer
    val_per_subtask: int = 4  # few-shot validation rows per subtask (used for selection)
    test_per_subtask: int = 40  # held-out test rows per subtask (used only for evaluation)
    corpus_size: int = 3000  # plain-text documents about the world, for the base models' pretraining

    def __post_init__(self) -> None:
        require(self.pool_size >= 50, "pool_size", "must be at least 50")
        for name in ("target_share", "decoy_share", "harmful_share"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, name, f"must lie in [0, 1], got {value}")
        require(self.target_share + self.decoy_share <= 1.0, "target_share",
                "target_share + decoy_share must not exceed 1")
        require(self.val_per_subtask >= 1, "val_per_subtask", "must be at least 1")
        require(self.test_per_subtask >= 1, "test_per_subtask", "must be at least 1")
        require(self.corpus_size >= 0, "corpus_size", "must be >= 0")


@dataclass(frozen=True)
class DataConfig:
    """Where the pool and target tasks are, and how examples are tokenized."""

    pool: str = "data/benchmark/pool.jsonl"  # JSONL or Parquet in the Tulu v2 ``messages`` shape
    targets: str = "data/benchmark/targets"  # folder with one sub-folder per target task (val/test splits)
    # how data.targets is laid out: jsonl (<task>/val.jsonl + test.jsonl folders) or one of LESS's evaluation
    # files: mmlu (folder with dev/ and test/ CSVs), bbh (bbh-three-shot.json), tydiqa (tydiqa-one-shot.json);
    # the LESS files give validation rows only: put a test.jsonl beside them (docs: inflow.data.less_layouts)
    targets_format: Literal["jsonl", "mmlu", "bbh", "tydiqa"] = "jsonl"
    max_seq_len: int = 256  # tokens; longer examples are truncated from the right
    # pool rows: label the newline after each assistant answer's EOS (true: LESS / open-instruct, whose
    # encode_with_messages_format leaves it in the loss) or mask it (false: this project's earlier rule)
    label_newline: bool = True
    # plain text the demo tokenizer and base models learn from (JSONL of {"text": ...}, or .txt, a document a
    # line); the tokenizer also always learns the pool's text (demo models only)
    corpus: str = "data/benchmark/corpus.jsonl"
    # whether the demo base models also pretrain on the pool's rendered text, so they know its vocabulary:
    # auto: for your own pool, not for the built-in one (whose target skills pretraining must not teach)
    pretrain_on_pool: Literal["auto", "always", "never"] = "auto"

    def __post_init__(self) -> None:
        require(self.max_seq_len >= 8, "max_seq_len", "must be at least 8 tokens")


@dataclass(frozen=True)
class TokenizerConfig:
    """The locally trained BPE tokenizer of the demo models."""

    vocab_size: int = 1024

    def __post_init__(self) -> None:
        require(self.vocab_size >= 64, "vocab_size", "must be at least 64")


@dataclass(frozen=True)
class ModelConfig:
    """A causal LM. ``build: true``: the demo builds and pretrains a tiny one from the sizes below;
    ``build: false``: ``path`` is your own Hugging Face checkpoint (from_pretrained directory), used as is."""

    build: bool = True
    path: str = ""  # with build: false, your checkpoint directory (it must include its tokenizer)
    family: Literal["llama", "qwen2"] = "llama"
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    pretrain_epochs: int = 10  # causal-LM epochs over the benchmark corpus, so fine-tuning starts from a sane model
    pretrain_lr: float = 3e-3
    pretrain_batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.build or bool(self.path), "path", "set it to your checkpoint directory when build is false")
        require(self.hidden_size % self.num_heads == 0, "hidden_size", "must be divisible by num_heads")
        require(self.num_layers >= 1, "num_layers", "must be at least 1")
        require(self.pretrain_epochs >= 0, "pretrain_epochs", "must be >= 0")
        require(self.pretrain_lr > 0, "pretrain_lr", "must be positive")


@dataclass(frozen=True)
class LoraConfig:
    """LoRA adapter settings (peft)."""

    r: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")

    def __post_init__(self) -> None:
        require(self.r >= 1, "r", "must be at least 1")
        require(0.0 <= self.dropout < 1.0, "dropout", "must lie in [0, 1)")
        require(len(self.target_modules) > 0, "target_modules", "name at least one module")


@dataclass(frozen=True)
class TrainConfig:
    """An AdamW LoRA training run (warmup on the selector, fine-tuning of the target)."""

    epochs: int = 4
    lr: float = 2e-3
    batch_size: int = 8
    warmup_ratio: float = 0.03  # linear warmup over this share of steps, then linear decay to 0
    weight_decay: float = 0.0
    seed: int = 0
    lora: LoraConfig = field(default_factory=LoraConfig)
    # where training runs: cpu, cuda, cuda:N, or auto (cuda when a GPU is visible, else cpu)
    device: str = "cpu"
    # autocast of the forward/backward: float32 (none), bfloat16, or float16 (GPU only, with loss scaling);
    # bfloat16 on a GPU also loads the frozen base weights in bfloat16 (LoRA weights stay float32)
    precision: Literal["float32", "bfloat16", "float16"] = "float32"
    grad_accum: int = 1  # micro-batches of batch_size rows per optimizer step: effective batch batch_size*grad_accum
    max_grad_norm: float = 1.0  # clip the gradient's global L2 norm before each optimizer step (HF, LESS); 0: off
    gradient_checkpointing: bool = False  # recompute activations in the backward: less memory, ~30% more time
    # example: mean over the effective batch's examples of each one's mean answer-token loss (each example weighs
    # the same, as in the LESS gradient features); token: mean over all its answer tokens (HF Trainer, LESS)
    loss: Literal["example", "token"] = "example"

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "epochs", "must be at least 1")
        require(self.lr > 0, "lr", "must be positive")
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(0.0 <= self.warmup_ratio < 1.0, "warmup_ratio", "must lie in [0, 1)")
        require(is_device(self.device), "device", f"must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        require(not (self.precision == "float16" and self.device == "cpu"), "precision",
                "float16 needs a GPU: set device: cuda (or auto), or use precision bfloat16 / float32 on CPU")
        require(self.grad_accum >= 1, "grad_accum", "must be at least 1 (1: no accumulation)")
        require(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0 (0: no clipping)")


@dataclass(frozen=True)
class WarmupConfig(TrainConfig):
    """LESS warmup: LoRA on a random ``fraction`` of the pool, one checkpoint per epoch."""

    fraction: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0.0 < self.fraction <= 1.0, "fraction", "must lie in (0, 1]")


@dataclass(frozen=True)
class SketchConfig:
    """Random projection of gradient features (block-diagonal, one block per layer)."""

    kind: Literal["rademacher", "sparse_jl", "hadamard"] = "rademacher"
    dim: int = 8192  # total projected dimension d (blocks get shares proportional to their size)
    seed: int = 0

    def __post_init__(self) -> None:
        require(self.dim >= 1, "dim", "must be at least 1")


@dataclass(frozen=True)
class FeaturesConfig:
    """Per-example gradient features written to the Zarr store."""

    # the training run whose checkpoint-<step> directories (HF Trainer layout) give the features: data/warmup (the
    # warmup stage) or another run's output directory, e.g. LESS's own; dvc.yaml depends on it either way
    warmup_dir: str = "data/warmup"
    checkpoints: tuple[str, ...] = ()  # empty: every checkpoint-<step> of warmup_dir; else their names (or paths)
    # the model the checkpoints were trained from; empty: the selector model for the warmup stage's run, else the
    # base_model_name_or_path in the checkpoints' adapter_config.json
    base_model: str = ""
    batch_size: int = 16  # rows per batch of the JVP embeddings and of the Hessian's target rows
    # padded tokens per gradient batch (rows of one bucket width, so a batch of short rows is wide); 0: the device's
    # default (CPU 1024 per thread; GPU from its free memory and the model's shape: inflow.devices.default_batch_tokens)
    batch_tokens: int = 0
    chunk_rows: int = 1024  # rows per store chunk (the unit of fan-out, resume and integrity)
    dtype: Literal["float16", "float32"] = "float16"
    adam_eps_inside_sqrt: bool = True  # LESS parity: m'/sqrt(v'+eps); false: m'/(sqrt(v')+eps)
    # CPU threads per extracting process; 0: every core the process is given. Gradient batches run one per thread
    # at one torch intra-op thread each, so their bits do not depend on it; the JVP embeddings use it as torch's
    # intra-op thread count (0: one; bit-identical between runs at the same count, which their stores record)
    threads: int = 0
    # where chunks are extracted: '' threads of the flow process; 'local' a Dask LocalCluster of `workers`
    # processes; else the address of a running Dask scheduler (tcp://host:8786) whose workers share the store
    dask_address: str = ""
    workers: int = 2  # chunk-extraction threads ('') or worker processes ('local'); the cluster decides otherwise
    # where the forward/backward runs: cpu, cuda, cuda:N, or auto (cuda when a GPU is visible, else cpu)
    device: str = "cpu"
    # autocast dtype of the forward/backward: float32 (none), bfloat16, float16 (GPU), or auto (bfloat16 on a GPU
    # that has it, else float32); the store records the dtype used
    precision: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # MiB of unprojected features gathered (within a chunk) before one sketch call: the dense sketch streams its
    # matrix once per call, so a call on many rows costs far less per row than one per batch; 0: the device's
    # default (256 on a CPU, 1/64 of a GPU's memory: inflow.devices.default_group_mib)
    sketch_group_mib: int = 0
    # recompute each decoder layer's forward in the backward instead of keeping its activations: several times less
    # memory per token (wider batches on a GPU) for half again the matmul work (frozen weights: the backward
    # computes input gradients only, as much as the forward, which now runs twice); the bytes do not change
    gradient_checkpointing: bool = False
    # torch.compile each decoder layer (inductor fuses the elementwise passes between the matmuls: norms, rotary,
    # residual adds, SiLU times up): for a GPU, where those passes are memory-bound; compiling takes up to a minute
    # per process; the features agree with eager ones to rounding and stores record it (not with Hessian products)
    compile: bool = False

    def __post_init__(self) -> None:
        require(is_device(self.device), "device", f"must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.chunk_rows >= 1, "chunk_rows", "must be at least 1")
        require(self.threads >= 0, "threads", "must be >= 0 (0: every core the process is given)")
        require(self.batch_tokens >= 0, "batch_tokens", "must be >= 0 (0: the device's default)")
        require(self.workers >= 1, "workers", "must be at least 1")
        require(self.sketch_group_mib >= 0, "sketch_group_mib", "must be >= 0 (0: the device's default)")
        address = self.dask_address
        require(address in ("", "local") or (":" in address and not any(c.isspace() for c in address)),
                "dask_address", f"must be '', 'local' or a Dask scheduler address like tcp://host:8786, got "
                f"{address!r}")


@dataclass(frozen=True)
class SelectConfig:
    """How many pool rows every method selects (the same budget rule for all), and how LESS picks them."""

    fraction: float = 0.05
    count: int = 0  # > 0 overrides fraction
    seed: int = 0  # seeds the random baseline
    # how LESS turns per-subtask scores into a selection: round_robin (each subtask in turn takes its best
    # unselected row) or max (the paper's rule: top k of the max over subtasks); docs/architecture.md
    subtask_rule: Literal["round_robin", "max"] = "round_robin"
    # where LESS's scoring matmuls run (the store is streamed from disk either way): cpu, cuda, cuda:N or auto
    device: str = "cpu"

    def __post_init__(self) -> None:
        require(is_device(self.device), "device", f"must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        require(0.0 < self.fraction <= 1.0, "fraction", "must lie in (0, 1]")
        require(self.count >= 0, "count", "must be >= 0 (0 means: use fraction)")


@dataclass(frozen=True)
class BaselinesConfig:
    """The targeted baselines (stages bm25, rds): at select's budget and under its subtask_rule, like LESS."""

    bm25_k1: float = 1.5  # BM25 term-frequency saturation
    bm25_b: float = 0.75  # BM25 length normalisation
    # RDS: the selector base model's final hidden states averaged over the row's tokens, or at its last token
    # (LESS's RDS; on the benchmark the tiny selector's last-token states pick decoys, docs/results.md)
    rds_pooling: Literal["last", "mean"] = "mean"
    rds_batch_size: int = 32
    rds_device: str = "cpu"  # cpu | cuda | cuda:N | auto

    def __post_init__(self) -> None:
        require(self.bm25_k1 >= 0, "bm25_k1", "must be >= 0")
        require(0.0 <= self.bm25_b <= 1.0, "bm25_b", "must lie in [0, 1]")
        require(self.rds_batch_size >= 1, "rds_batch_size", "must be at least 1")
        require(is_device(self.rds_device), "rds_device", f"must be cpu, cuda, cuda:N or auto, got {self.rds_device!r}")


@dataclass(frozen=True)
class DistillConfig:
    """Influence Distillation (stages embed, landmarks, distill; DESIGN §6): JVP embeddings of every row, exact
    influence of a few landmark rows, kernel ridge propagation to the rest, top-k by the propagated influence."""

    # JVP embeddings (stage embed): the selector's first embed_blocks blocks, `tangents` Gaussian directions over
    # their weights, the answer's last token's final hidden state differentiated along each, sketched to embed_dim
    embed_blocks: int = 4
    tangents: int = 2
    embed_dim: int = 4096
    seed: int = 0  # tangents, the embedding sketch and random landmarks
    # landmarks (stage landmarks): how many pool rows get exact influence (capped by the pool) and how they are
    # drawn: random, or kmeans++ seeding in embedding space (spread over the pool's clusters)
    landmarks: int = 4096
    landmark_rule: Literal["random", "kmeans++"] = "kmeans++"
    # which warmup checkpoint's weights and optimizer state give the exact influence: '' the last one, else a name
    checkpoint: str = ""
    # adam: the landmarks' gradients preconditioned by the checkpoint's Adam state, a ⊙ g (the update Adam makes);
    # sgd: plain gradients (plain gradient descent)
    optimizer: Literal["adam", "sgd"] = "adam"
    # first order: influence as the cosine of the landmark's update and the target gradient instead of their inner
    # product (LESS's normalisation: raw inner products favour short rows, whose gradients are large; measured in
    # docs/benchmarks.md). false: the paper's inner product, which the second order needs
    normalize: bool = True
    # propagation (stage distill): kernel ridge regression from the landmarks' embeddings; damping is its λ
    kernel: Literal["rbf", "linear"] = "rbf"
    damping: float = 1e-3
    # round_robin: each target row in turn takes its most helpful unselected row (first order only); top_k: the rows
    # of largest influence on the task's mean target gradient, which on the benchmark piles onto the subtasks whose
    # influence runs highest (as LESS's max rule does; docs/results.md)
    rule: Literal["top_k", "round_robin"] = "round_robin"
    # first: top-k by the influence p; second: optimal weights from a QP with the target loss's Hessian (through
    # Hessian-vector products at the landmarks), rows ranked by weight
    order: Literal["first", "second"] = "first"
    eta: float = 0.0  # the step size η of the second-order objective; 0: the checkpoint epoch's mean learning rate
    # the QP's L2 damping λ, in units of the root mean square of p (scale-free: p is a gradient inner product)
    qp_damping: float = 0.1

    def __post_init__(self) -> None:
        require(self.embed_blocks >= 1, "embed_blocks", "must be at least 1")
        require(self.tangents >= 1, "tangents", "must be at least 1")
        require(self.embed_dim >= 1, "embed_dim", "must be at least 1")
        require(self.landmarks >= 2, "landmarks", "must be at least 2")
        require(self.damping > 0, "damping", "must be positive (the kernel ridge λ)")
        require(self.eta >= 0, "eta", "must be >= 0 (0: the checkpoint's learning rate)")
        require(self.qp_damping > 0, "qp_damping", "must be positive (it makes the weight QP strictly convex)")
        require(not (self.order == "second" and self.rule == "round_robin"), "rule",
                "round_robin is first-order only: the second-order weights are solved per task; set rule: top_k "
                "with order: second")
        require(not (self.order == "second" and self.normalize), "normalize",
                "the second-order weights need the unnormalised influence p (a loss change) and Hessian products; "
                "set normalize: false with order: second")


_LAYER_SPEC = re.compile(r"^(all|(first|last):[1-9][0-9]*)$")


@dataclass(frozen=True)
class In2CoreConfig:
    """In2Core (stages in2core_grads, in2core, coverage; DESIGN §6): DataInf influence of every pool row on the
    target tasks, on a reduced set of layer blocks; the proponents as a coreset; each test row's coverage."""

    # whose gradients: warmup = a checkpoint of features.warmup_dir (LESS's warmup, no extra training; the better
    # coresets on the benchmark, docs/results.md); pool = a LoRA of the selector trained on the whole pool for
    # train_epochs epochs (the paper's setting; the other training settings are warmup's)
    model: Literal["warmup", "pool"] = "warmup"
    checkpoint: str = ""  # which checkpoint of that run: '' the last
    train_epochs: int = 1
    # the layer blocks whose influence is summed: all, first:K, last:K, or a list of block indices ([0, -1])
    layers: str | tuple[int, ...] = "all"
    # reduced-layer settings whose ranking is compared with all layers (Spearman, top-k overlap, time) in in2core.json
    compare: tuple[str, ...] = ("first:1", "last:1")
    damping: float = 0.1  # DataInf's λ_l = damping · mean ‖g_l‖² / D_l
    # round_robin: each validation subtask in turn takes its most helpful row left (LESS's default); top_k: the rows
    # most helpful to the task's mean validation gradient (the paper), which one subtask's large gradients can own
    rule: Literal["round_robin", "top_k"] = "round_robin"
    fraction: float = 0.5  # the coreset: this share of the pool, or `count` rows when count > 0
    count: int = 0
    coverage_top: int = 10  # coverage: the support of each test row's `coverage_top` best proponents

    def __post_init__(self) -> None:
        require(self.train_epochs >= 1, "train_epochs", "must be at least 1")
        specs = [self.layers] if isinstance(self.layers, str) else []
        require(all(_LAYER_SPEC.match(s) for s in (*specs, *self.compare)), "layers",
                "layers and compare take all, first:K or last:K (K >= 1); layers also takes a list of block indices")
        require(isinstance(self.layers, str) or len(self.layers) > 0, "layers", "name at least one block, or all")
        require(self.damping > 0, "damping", "must be positive (DataInf's per-layer damping scale)")
        require(0.0 < self.fraction <= 1.0, "fraction", "must lie in (0, 1]")
        require(self.count >= 0, "count", "must be >= 0 (0 means: use fraction)")
        require(self.coverage_top >= 1, "coverage_top", "must be at least 1")


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """LoRA fine-tuning of the target model on a selection."""



@dataclass(frozen=True)
class EvaluateConfig:
    """Held-out evaluation: answer-token loss and greedy exact match."""

    batch_size: int = 32
    # generation budget of exact match: 0 (auto) = the longest reference answer of the task's test split in
    # tokens plus a small margin (EOS, retokenization); a positive value is used as is (warned if too short)
    max_new_tokens: int = 0
    # where evaluation runs: cpu, cuda, cuda:N, or auto (cuda when a GPU is visible, else cpu)
    device: str = "cpu"
    # autocast dtype of the forward passes and generation: float32 (none), bfloat16 or float16 (GPU)
    precision: Literal["float32", "bfloat16", "float16"] = "float32"

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "batch_size", "must be at least 1")
        require(self.max_new_tokens >= 0, "max_new_tokens", "must be >= 0 (0: the longest test answer, auto)")
        require(is_device(self.device), "device", f"must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        require(self.precision != "float16" or self.device != "cpu", "precision",
                "float16 is for GPUs; on cpu use bfloat16 or float32")
