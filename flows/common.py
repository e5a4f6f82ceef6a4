"""Command-line entry shared by every flow module."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from inflow.config import Params, load_params
from inflow.errors import InflowError


def load(params_path: str) -> Params:
    """Validated params; the core's loggers print INFO alongside Prefect's."""
    logging.getLogger("inflow").setLevel(logging.INFO)
    return load_params(params_path)


def cli(flow: Callable, **options: dict) -> None:
    """Parse ``--params`` plus the flow's own ``options`` ({name: argparse kwargs}) and run ``flow``.

    A user error (:class:`InflowError`) prints its message and exits 1 instead of a traceback.
    """
    parser = argparse.ArgumentParser(prog=f"python -m flows.{flow.name}", description=flow.description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    for name, kwargs in options.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, **kwargs)
    args = parser.parse_args()
    try:
        flow(params_path=args.params, **{name: getattr(args, name) for name in options})
    except InflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
