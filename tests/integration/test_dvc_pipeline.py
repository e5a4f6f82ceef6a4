"""The whole DAG on tiny params, driven as the three kinds of user drive it, against real servers:

1. an operator serves the pipeline as a scheduled Prefect deployment (`inflow serve --cron`) on a real Prefect
   server and triggers a run through the API: `dvc repro` of every stage, `dvc push` to an S3-compatible remote
   (moto's server), the report;
2. a teammate clones the repository (empty cache), `inflow share pull`s, finds `inflow status` clean, and runs
   LESS-T with a new target model: no gradient feature or selection stage runs (from DVC's output and from the
   Prefect server's flow runs); a local-directory remote serves a second clone the same way;
3. back in the first clone, a warmup rerun with another learning rate writes checkpoints of the same names, and
   `dvc repro` must rebuild the persisted gradient stores from them (their content hashes change) and select anew.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from inflow.config import params_to_dict, tiny_params
from inflow.ops import prefect_server
from inflow.store import GradientStore
from tests.integration.dvcrepo import make_repo, ran, write_params
from tests.integration.servers import S3_CREDENTIALS, moto_s3, s3_object_count

SELECTION_STAGES = {"prepare", "tokenizer", "base@selector", "warmup", "features@pool", "features@targets",
                    "less", "baselines", "embed@pool", "embed@targets", "landmarks", "distill", "in2core_grads",
                    "in2core", "bm25", "rds"}
SELECTION_FLOWS = {s.split("@")[0] for s in SELECTION_STAGES} - {"base"}  # base@target runs for a new target
INFLOW = str(Path(sys.executable).parent / "inflow")
BUCKET = "team-cache"

TRIGGER = """
import json, sys, time
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

with get_client(sync_client=True) as client:
    for _ in range(240):  # `inflow serve` registers the deployment once its server and imports are up
        try:
            deployment = client.read_deployment_by_name("pipeline/nightly")
            break
        except Exception:
            time.sleep(1)
run = run_deployment("pipeline/nightly", timeout=float(sys.argv[1]), poll_interval=5)
with get_client(sync_client=True) as client:
    flows = {f.id: f.name for f in client.read_flows()}
    runs = client.read_flow_runs()
    artifacts = client.read_artifacts()
print("RESULT", json.dumps({
    "state": run.state.type.value, "schedules": [s.schedule.cron for s in deployment.schedules],
    "parameters": deployment.parameters,
    "runs": [{"flow": flows[r.flow_id], "state": r.state.type.value, "parameters": r.parameters} for r in runs],
    "artifacts": {a.key: a.data for a in artifacts if a.key}}))
"""


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args], cwd=repo,
                            capture_output=True, text=True)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout


def _inflow(repo: Path, env: dict, *args: str, code: int = 0) -> str:
    result = subprocess.run([INFLOW, *args], cwd=repo, env=env, capture_output=True, text=True)
    out = result.stdout + result.stderr
    assert result.returncode == code, f"inflow {' '.join(args)} exited {result.returncode}:\n{out[-6000:]}"
    return out


def _flow_runs(env: dict) -> list[dict]:
    script = ("import json\nfrom prefect.client.orchestration import get_client\n"
              "with get_client(sync_client=True) as c:\n"
              "    flows = {f.id: f.name for f in c.read_flows()}\n"
              "    print('RESULT', json.dumps([{'id': str(r.id), 'flow': flows[r.flow_id]} "
              "for r in c.read_flow_runs(limit=200)]))\n")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.split("RESULT ", 1)[1])


@pytest.mark.slow
@pytest.mark.integration
def test_scheduled_run_pushes_then_a_fresh_clone_pulls_and_reuses_every_selection(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect-home"))  # the test's own server database
    params = params_to_dict(tiny_params())
    repo = make_repo(tmp_path / "a", params)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "project")
    with (moto_s3(BUCKET, tmp_path / "moto.log") as endpoint,
          prefect_server(tmp_path / "prefect.log") as api_url):
        env = {**os.environ, **S3_CREDENTIALS, "PREFECT_API_URL": api_url, "DVC_NO_ANALYTICS": "1"}
        _inflow(repo, env, "share", "remote", "team", f"s3://{BUCKET}/inflow", "--endpoint-url", endpoint)
        _inflow(repo, env, "share", "remote", "backup", str(tmp_path / "backup"), "--no-default")
        _git(repo, "commit", "-qam", "remotes")

        # 1. the operator's scheduled deployment, one run triggered through the API
        serve = subprocess.Popen([INFLOW, "serve", "--cron", "0 3 * * *", "--name", "nightly"], cwd=repo, env=env,
                                 stdout=open(tmp_path / "serve.log", "w"), stderr=subprocess.STDOUT)
        try:
            trigger = subprocess.run([sys.executable, "-c", TRIGGER, "3600"], env=env, capture_output=True,
                                     text=True)
        finally:
            serve.terminate()
            serve.wait(timeout=60)
        assert trigger.returncode == 0, f"{trigger.stderr[-4000:]}\n{(tmp_path / 'serve.log').read_text()[-6000:]}"
        record = json.loads(trigger.stdout.split("RESULT ", 1)[1])
        assert record["state"] == "COMPLETED", (tmp_path / "serve.log").read_text()[-6000:]
        assert record["schedules"] == ["0 3 * * *"] and record["parameters"]["push"] is True
        stage_runs = [r for r in record["runs"] if r["flow"] not in ("pipeline", "features-extract")]
        assert SELECTION_FLOWS | {"finetune", "evaluate", "report"} <= {r["flow"] for r in stage_runs}
        assert all(r["state"] == "COMPLETED" for r in stage_runs)
        pipeline_runs = sorted(r["state"] for r in record["runs"] if r["flow"] == "pipeline")
        assert pipeline_runs[0] == "COMPLETED" and set(pipeline_runs[1:]) == {"SCHEDULED"}  # the next 03:00s
        assert {"params_path": "params.yaml", "split": "pool"} in [r["parameters"] for r in stage_runs]
        assert "stage-features-pool" in record["artifacts"] and "stage-report" in record["artifacts"]
        assert "pushed to DVC remote: team" in record["artifacts"]["pipeline-run"]
        summary = json.loads((repo / "reports/summary.json").read_text())
        methods = {"less", "distill", "in2core", "bm25", "rds", "random", "random_in2core", "full"}
        assert {r["method"] for r in summary["rows"]} == methods
        assert len(summary["rows"]) == 3 * len(methods)  # 3 target tasks x every method
        assert s3_object_count(endpoint, BUCKET) > 100  # every store's chunks, checkpoints, selections
        assert "in sync" in _inflow(repo, env, "status", "--cloud")
        _inflow(repo, env, "share", "push", "--remote", "backup", "--quiet")
        _git(repo, "add", "-A")  # dvc.lock, metrics, timings: what DVC leaves to git
        _git(repo, "commit", "-qm", "scheduled run")

        # 2. a teammate: fresh clone, empty cache, pull, status clean, LESS-T with a new target model
        clone = tmp_path / "b"
        _git(tmp_path, "clone", "-q", str(repo), str(clone))
        assert not list(clone.glob("data/**/*.zarr")) and not (clone / ".dvc/cache").exists()
        _inflow(clone, env, "share", "pull", "--quiet")
        assert GradientStore.open(next((clone / "data/grads/pool").glob("*.zarr"))).is_complete()
        _inflow(clone, env, "status")  # exit 0: every stage up to date
        params_b = {**params, "target": {**params["target"], "hidden_size": 48}}  # a different target model
        write_params(clone, params_b)
        before = {r["id"] for r in _flow_runs(env)}
        out = _inflow(clone, env, "run")
        second = ran(out)
        assert {"base@target", "finetune@less", "finetune@in2core", "coverage", "report"} <= second
        assert not (second & SELECTION_STAGES), f"selection stages reran: {second & SELECTION_STAGES}"
        new_flows = {r["flow"] for r in _flow_runs(env) if r["id"] not in before}
        assert "finetune" in new_flows and not (new_flows & SELECTION_FLOWS), new_flows
        third_clone = tmp_path / "c"  # the local-directory remote serves a clone the same way
        _git(tmp_path, "clone", "-q", str(repo), str(third_clone))
        _inflow(third_clone, env, "share", "pull", "--remote", "backup", "--quiet")
        _inflow(third_clone, env, "status")

        # 3. the warmup again with another learning rate: same checkpoint names, other weights and moments
        stores = sorted((repo / "data/grads/pool").glob("*.zarr"))
        before_stores = {p.name: (GradientStore.open(p).attrs, GradientStore.open(p).read_all()) for p in stores}
        scores = pl.read_parquet(repo / "data/selections/less/scores.parquet")
        params["warmup"]["lr"] = params["warmup"]["lr"] * 5
        write_params(repo, params)
        third = ran(_inflow(repo, env, "run"))
    assert {"warmup", "features@pool", "features@targets", "less", "landmarks", "distill", "in2core_grads",
            "in2core"} <= third  # tiny params: In2Core's gradients come from the warmup checkpoint
    assert not {"embed@pool", "embed@targets"} & third  # embeddings come from the base model, not the warmup
    assert sorted(p.name for p in (repo / "data/grads/pool").glob("*.zarr")) == sorted(before_stores)
    for name, (attrs, features) in before_stores.items():
        after = GradientStore.open(repo / "data/grads/pool" / name)
        assert after.attrs.adapter_hash != attrs.adapter_hash and after.attrs.optimizer_hash != attrs.optimizer_hash
        assert np.mean(np.sum(after.read_all() * features, axis=1)) < 0.999  # recomputed, not reused
    new_scores = pl.read_parquet(repo / "data/selections/less/scores.parquet")
    assert not np.allclose(new_scores.drop("example_id").to_numpy(), scores.drop("example_id").to_numpy())
