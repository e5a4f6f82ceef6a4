"""Command-line entry shared by every flow module, and the wall time of each stage run (``timings/``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from inflow.config import Params, load_params
from inflow.errors import InflowError


def load(params_path: str) -> Params:
    """Validated params; the core's loggers print INFO alongside Prefect's."""
    logging.getLogger("inflow").setLevel(logging.INFO)
    return load_params(params_path)


TIMINGS = Path("timings")
"""``timings/<stage>.json``: {"stage", "seconds"} of the stage's last run, a DVC metric of every stage."""


def stage_name(flow_name: str, item: str | None = None) -> str:
    """The DVC stage a flow run is: ``<flow>`` or, for a foreach stage, ``<flow>@<item>``."""
    return f"{flow_name}@{item}" if item else flow_name


def write_timing(stage: str, seconds: float, root: Path = TIMINGS) -> Path:
    """Record one stage run's wall time as ``<root>/<stage>.json``."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{stage}.json"
    path.write_text(json.dumps({"stage": stage, "seconds": round(seconds, 3)}, indent=2) + "\n")
    return path


def cli(flow: Callable, **options: dict) -> None:
    """Parse ``--params`` plus the flow's own ``options`` ({name: argparse kwargs}) and run ``flow``; on success,
    record its wall time (:func:`write_timing`; a foreach stage's item is its one option's value).

    A user error (:class:`InflowError`) prints its message and exits 1 instead of a traceback.
    """
    parser = argparse.ArgumentParser(prog=f"python -m flows.{flow.name}", description=flow.description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    for name, kwargs in options.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, **kwargs)
    args = parser.parse_args()
    assert len(options) <= 1, "a stage flow takes at most one option: its foreach item"
    started = time.perf_counter()
    try:
        flow(params_path=args.params, **{name: getattr(args, name) for name in options})
    except InflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    write_timing(stage_name(flow.name, *(str(getattr(args, name)) for name in options)),
                 time.perf_counter() - started)
