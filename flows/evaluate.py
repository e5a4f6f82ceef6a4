"""Stage ``evaluate``: every fine-tuned model of one method on its target tasks' held-out test splits."""

import json
from pathlib import Path

from prefect import flow

from flows.common import cli, load, summarised
from inflow import paths
from inflow.data.targets import validate_targets
from tasks.stages import evaluate_model


@flow(name="evaluate", description="Test loss and exact match of a method's fine-tuned models.")
@summarised
def evaluate(params_path: str = "params.yaml", method: str = "less") -> dict:
    params = load(params_path)
    validate_targets(params.data)  # every task readable and with a test split, before any model loads
    adapters = sorted(p for p in Path(paths.FINETUNED, method).iterdir() if p.is_dir())
    metrics = {a.name: evaluate_model(params, a) for a in adapters}
    out = paths.metrics_path(method)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    cli(evaluate, method={"required": True})
