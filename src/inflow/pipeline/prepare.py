"""The ``prepare`` and ``tokenizer`` steps: the built-in benchmark and the demo tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

from inflow.config import BenchmarkConfig, TokenizerConfig
from inflow.data.benchmark import generate_benchmark
from inflow.data.pool import load_pool, pool_texts
from inflow.models.tokenizer import save_tokenizer, train_tokenizer


def prepare_benchmark(cfg: BenchmarkConfig, out_dir: str | Path) -> dict:
    """Generate the seeded synthetic benchmark into ``out_dir`` (pool, corpus, target tasks)."""
    return generate_benchmark(cfg, out_dir)


def read_corpus(path: str | Path) -> list[str]:
    """Texts of a ``corpus.jsonl`` ({"text": ...} per line)."""
    return [json.loads(line)["text"] for line in Path(path).read_text().splitlines() if line.strip()]


def build_tokenizer(cfg: TokenizerConfig, corpus: str | Path, pool: str | Path, out_dir: str | Path) -> dict:
    """Train the demo BPE tokenizer on the corpus and the rendered pool, save it to ``out_dir``."""
    texts = read_corpus(corpus) + pool_texts(load_pool(pool), eos="</s>")
    tokenizer = train_tokenizer(texts, cfg.vocab_size)
    save_tokenizer(tokenizer, out_dir)
    return {"vocab_size": len(tokenizer), "texts": len(texts), "path": str(out_dir)}
