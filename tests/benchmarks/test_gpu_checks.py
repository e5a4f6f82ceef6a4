"""``benchmarks/gpu_checks.sh`` keeps working between the sessions that are lent a GPU: its dry run (every step's
command on the CPU at the quick size) finishes every step with status 0 without importing what the GPU image
lacks, and its budget skips what does not fit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# our dependencies that the GPU machine's image does not have (the device tool's KINDS.md): zarr and polars travel
# as wheels, these would not, so nothing the checks run may import them
NOT_IN_IMAGE = ("prefect", "prefect_dask", "dask", "distributed", "dvc", "dvc_s3", "clarabel", "bm25s", "moto",
                "sqlalchemy", "fastapi")
BLOCKER = f"""import sys

class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_IN_IMAGE!r}:
            raise ImportError("not in the GPU image: " + name)

sys.meta_path.insert(0, _Block())
"""
STEPS = ["env", "tests", "determinism", "defaults_1b_rademacher", "breakdown_1b", "defaults_1b_compile",
         "breakdown_1b_compile", "defaults_1b_sparse_jl",
         "defaults_1b_hadamard", "defaults_7b", "defaults_7b_checkpointing", "sketch", "sweep", "defaults_7b_masked",
         "standard_1b_eager", "standard_1b_sdpa"]
MAX_FILES = 8  # what the device tool brings back from $OUT


def _run(out: Path, **env: str) -> list[str]:
    full = {**os.environ, "GPU_CHECKS_DRY": "1", "PYTHON": sys.executable, "OUT": str(out), **env}
    subprocess.run(["bash", "benchmarks/gpu_checks.sh"], cwd=ROOT, env=full, check=True, capture_output=True,
                   timeout=900)
    return (out / "steps.txt").read_text().splitlines()


@pytest.mark.slow
def test_the_dry_run_runs_every_step_without_what_the_image_lacks(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)  # imported by every python the script starts
    probe = subprocess.run([sys.executable, "-c", "import prefect"], env={**os.environ, "PYTHONPATH": str(blocker)},
                           capture_output=True, text=True)
    assert "not in the GPU image: prefect" in probe.stderr  # the blocker works
    lines = _run(tmp_path / "out", PYTHONPATH=str(blocker))
    ran = {line.split(":")[0]: line for line in lines[:-1]}
    assert list(ran) == STEPS
    assert all(": rc 0 in " in line for line in ran.values()), lines
    assert lines[-1].startswith("done in ")
    defaults = (tmp_path / "out" / "defaults.txt").read_text()
    assert defaults.count("defaults=true") == 7  # each defaults step printed its figures
    assert defaults.count("speedup_vs_less_loop=") == 2  # the loop timed once per shape (1B, 7B)
    summary = (tmp_path / "out" / "summary.txt").read_text().splitlines()
    assert len(summary) == 7 and all("fraction_of_peak=" in line for line in summary)
    assert (tmp_path / "out" / "breakdown.txt").read_text().count("phase_outer_products=") == 2  # the profiles
    assert len(list((tmp_path / "out").iterdir())) <= MAX_FILES


def test_the_budget_skips_steps_and_steps_can_be_named(tmp_path: Path) -> None:
    lines = _run(tmp_path, GPU_CHECKS_BUDGET_S="60", GPU_CHECKS_STEPS="sketch defaults_7b")
    assert lines[0].startswith("defaults_7b: skipped")  # its minimum is 70 s, the whole budget 60
    assert lines[1].startswith("sketch: rc 0 in ")
    assert len(lines) == 3 and lines[2].startswith("done in ")
