"""Stage ``finetune``: LoRA fine-tuning of the target model on each selection of one method (LESS-T)."""

from pathlib import Path

from prefect import flow

from flows.common import cli, load, summarised
from inflow import paths
from tasks.stages import finetune_target


@flow(name="finetune", description="Fine-tune the target model on a method's selections.")
@summarised
def finetune(params_path: str = "params.yaml", method: str = "less") -> list[str]:
    params = load(params_path)
    selections = sorted(Path(paths.selection_dir(method)).glob("*.jsonl"))
    if not selections:
        raise FileNotFoundError(f"no selections in {paths.selection_dir(method)}; run the {method} stage first")
    return [finetune_target(params, method, s) for s in selections]


if __name__ == "__main__":
    cli(finetune, method={"required": True})
