"""On-disk form of a selection.

``<dir>/selection.parquet``: one row per selected example and target, columns
``example_id, score, rank, target, method, selector``; and ``<dir>/<target>.jsonl``: the selected pool rows
in the pool's own format (loadable by ``datasets.load_dataset("json", data_files=...)``), best first.
A selection that serves every target (random, full) uses the target name ``all``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from inflow.data.pool import write_pool_jsonl

SELECTION_TABLE = "selection.parquet"
ALL_TARGETS = "all"
METHOD_STAGES = {"less": "less", "distill": "distill", "in2core": "in2core", "bm25": "bm25", "rds": "rds",
                 "random": "baselines", "random_in2core": "baselines", "full": "baselines"}
"""Every selection method (``data/selections/<method>/``) and the DVC stage that writes it."""
METHODS = tuple(METHOD_STAGES)


def write_selection(
    tables: dict[str, pl.DataFrame], pool: pl.DataFrame, out_dir: str | Path, method: str, selector: str
) -> Path:
    """Write ``tables`` ({target: top_k frame}) and the selected rows of ``pool`` under ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = []
    for target, table in tables.items():
        frames.append(table.with_columns(pl.lit(target).alias("target"), pl.lit(method).alias("method"),
                                         pl.lit(selector).alias("selector")))
        rows = table.select("example_id", "rank").join(pool, on="example_id", how="left").sort("rank")
        if rows["messages"].null_count():
            raise ValueError(f"selection for {target} names example ids missing from the pool")
        write_pool_jsonl(rows.drop("rank"), out_dir / f"{target}.jsonl")
    pl.concat(frames).select("example_id", "score", "rank", "target", "method", "selector").write_parquet(
        out_dir / SELECTION_TABLE)
    return out_dir / SELECTION_TABLE


def read_selection(out_dir: str | Path) -> pl.DataFrame:
    """The selection table of ``out_dir``."""
    path = Path(out_dir) / SELECTION_TABLE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no selection here; run the selection stage first (dvc repro)")
    return pl.read_parquet(path)
