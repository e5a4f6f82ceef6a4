"""The ``prepare`` and ``tokenizer`` steps: the built-in benchmark and the demo tokenizer, and the text the demo
models learn from (``data.corpus``, plus the pool's text)."""

from __future__ import annotations

import json
from pathlib import Path

from inflow.config import BenchmarkConfig, DataConfig, TokenizerConfig
from inflow.data.benchmark import generate_benchmark
from inflow.data.pool import load_pool, pool_texts
from inflow.errors import InputError
from inflow.models.tokenizer import save_tokenizer, train_tokenizer
from inflow.paths import BENCHMARK


def uses_builtin(path: str | Path, benchmark_dir: str | Path = BENCHMARK) -> bool:
    """Whether ``path`` (a data.* setting) lies inside the built-in benchmark's folder."""
    return Path(path).resolve().is_relative_to(Path(benchmark_dir).resolve())


def prepare_benchmark(cfg: BenchmarkConfig, out_dir: str | Path, data: DataConfig | None = None) -> dict:
    """Generate the seeded synthetic benchmark into ``out_dir``: pool, target tasks and corpus, less the parts
    ``data`` does not use (your own pool and targets: only the corpus, if ``data.corpus`` is the built-in one)."""
    if data is None:
        return generate_benchmark(cfg, out_dir)
    parts = {"pool": uses_builtin(data.pool, out_dir), "targets": uses_builtin(data.targets, out_dir),
             "corpus": uses_builtin(data.corpus, out_dir)}
    return generate_benchmark(cfg, out_dir, parts={name for name, used in parts.items() if used})


def read_corpus(path: str | Path) -> list[str]:
    """Documents of a corpus file: JSONL of ``{"text": ...}`` rows, or plain text (``.txt``), a document a line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "no corpus file here", "set data.corpus to a JSONL ({\"text\": ...} per line) "
                         "or .txt file, or run the prepare stage for the built-in one")
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if path.suffix == ".txt":
            texts.append(line)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(path, number, f"invalid JSON ({exc.msg})", "one {\"text\": ...} object a line, or "
                             "use a .txt file") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise InputError(path, number, "a corpus row needs a string field \"text\"", "write {\"text\": ...}")
        texts.append(row["text"])
    return texts


def pretrains_on_pool(data: DataConfig) -> bool:
    """``data.pretrain_on_pool`` resolved: ``auto`` means yes for a pool outside the built-in benchmark."""
    if data.pretrain_on_pool == "auto":
        return not uses_builtin(data.pool)
    return data.pretrain_on_pool == "always"


def demo_texts(data: DataConfig, with_pool: bool) -> list[str]:
    """What the demo models learn from: ``data.corpus``, then (``with_pool``) the pool rendered as chat text."""
    texts = read_corpus(data.corpus)
    if with_pool:
        texts += pool_texts(load_pool(data.pool), eos="</s>")
    return texts


def build_tokenizer(cfg: TokenizerConfig, data: DataConfig, out_dir: str | Path) -> dict:
    """Train the demo BPE tokenizer on the corpus and the rendered pool, save it to ``out_dir``."""
    texts = demo_texts(data, with_pool=True)
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    save_tokenizer(tokenizer, out_dir)
    return {"vocab_size": len(tokenizer), "texts": len(texts), "path": str(out_dir)}
