"""Command-line entry shared by every flow module, the wall time of each stage run (``timings/``), the
Markdown summary artifact every stage flow run publishes (:func:`summarised`, :mod:`flows.artifacts`) and, for a
stage run by hand, the unprotecting of its DVC-linked outputs (:func:`unprotect_outputs`)."""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flows.artifacts import publish_stage_summary
from inflow.config import Params, load_params
from inflow.errors import InflowError
from inflow.files import unprotect

log = logging.getLogger(__name__)

DVC_FILE = Path("dvc.yaml")
"""The project's pipeline, relative to the working directory a flow runs in (the repository root)."""


def load(params_path: str) -> Params:
    """Validated params; the core's loggers print INFO alongside Prefect's."""
    logging.getLogger("inflow").setLevel(logging.INFO)
    return load_params(params_path)


TIMINGS = Path("timings")
"""``timings/<stage>.json``: {"stage", "seconds"} of the stage's last run, a DVC metric of every stage."""


def stage_name(flow_name: str, item: str | None = None) -> str:
    """The DVC stage a flow run is: ``<flow>`` or, for a foreach stage, ``<flow>@<item>``."""
    return f"{flow_name}@{item}" if item else flow_name


def summarised(fn: Callable) -> Callable:
    """Under ``@flow``: when the stage's body returns, publish its summary artifact on this flow run (the stage's
    name, parameters, wall time of the body, manifest facts and figures; :func:`~flows.artifacts.publish_stage_summary`,
    which only warns on failure) and return the body's result unchanged.

    The stage's foreach item is the flow's one parameter besides ``params_path``.
    """
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args: object, **kwargs: object) -> object:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        parameters = dict(bound.arguments)
        items = [str(v) for k, v in parameters.items() if k != "params_path"]
        since, started = time.time(), time.perf_counter()
        result = fn(*args, **kwargs)
        publish_stage_summary(stage_name(_flow_name(fn), *items[:1]), result, time.perf_counter() - started,
                              parameters, since)
        return result

    return run


def _flow_name(fn: Callable) -> str:
    """The running flow's name (the DVC stage's), else the function's."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    return context.flow.name if context and context.flow else fn.__name__


def dvc_stage(stage: str, dvc_file: str | Path = DVC_FILE) -> dict[str, Any]:
    """The definition of ``stage`` (``flow`` or ``flow@item``) in ``dvc_file``: a plain stage's mapping, or a
    foreach stage's ``do`` mapping with ``${item}`` replaced by the item in every string; {} when there is no such
    file or stage (or the item is not one of a literal ``foreach`` list's or mapping's). Other interpolations
    (``${data.pool}``) are left as written."""
    import yaml

    path = Path(dvc_file)
    if not path.is_file():
        return {}
    name, at, item = stage.partition("@")
    spec = ((yaml.safe_load(path.read_text()) or {}).get("stages") or {}).get(name)
    if not isinstance(spec, dict) or ("foreach" in spec) != bool(at):
        return {}
    if not at:
        return spec
    items = spec["foreach"]
    if isinstance(items, (list, dict)) and item not in {str(i) for i in items}:
        return {}
    return _interpolate_item(spec.get("do") or {}, item)


def _interpolate_item(value: Any, item: str) -> Any:
    if isinstance(value, str):
        return value.replace("${item}", item)
    if isinstance(value, dict):
        return {_interpolate_item(k, item): _interpolate_item(v, item) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate_item(v, item) for v in value]
    return value


OUTPUT_KINDS = ("outs", "metrics", "plots")
"""The keys of a DVC stage that list its outputs: each entry a path, or a one-key mapping {path: options}."""


def stage_outputs(spec: dict[str, Any]) -> Iterator[str]:
    """The output paths a stage definition (:func:`dvc_stage`) lists, whatever their options (``persist``,
    ``cache: false``); paths with an interpolation left unresolved are skipped."""
    for kind in OUTPUT_KINDS:
        for entry in spec.get(kind) or []:
            for path in ([entry] if isinstance(entry, str) else list(entry) if isinstance(entry, dict) else []):
                if "${" in str(path):
                    log.debug("stage output %s: unresolved interpolation, not unprotected", path)
                    continue
                yield str(path)


def unprotect_outputs(stage: str, dvc_yaml: str | Path = DVC_FILE) -> int:
    """Make the outputs ``dvc_yaml`` lists for ``stage`` safe to write, as ``dvc repro`` does before it runs a
    stage: every file in them that is a hardlink or symlink (into the DVC cache) becomes a private copy
    (:func:`inflow.files.unprotect`); return how many did. Nothing is deleted, persisted or not. No-op (0) when
    there is no ``dvc_yaml`` or no such stage in it; inside ``dvc repro`` nothing is linked any more, so this is a
    walk of ``lstat`` calls. Paths are relative to ``dvc_yaml``'s directory."""
    root = Path(dvc_yaml).parent
    replaced = sum(unprotect(root / path) for path in stage_outputs(dvc_stage(stage, dvc_yaml)))
    if replaced:
        log.info("stage %s: unprotected %d DVC-linked output file%s (private copies now, so writing them cannot "
                 "reach the DVC cache)", stage, replaced, "" if replaced == 1 else "s")
    return replaced


def write_timing(stage: str, seconds: float, root: Path = TIMINGS) -> Path:
    """Record one stage run's wall time as ``<root>/<stage>.json``."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{stage}.json"
    path.write_text(json.dumps({"stage": stage, "seconds": round(seconds, 3)}, indent=2) + "\n")
    return path


def cli(flow: Callable, **options: dict) -> None:
    """Parse ``--params`` plus the flow's own ``options`` ({name: argparse kwargs}) and run ``flow``; on success,
    record its wall time (:func:`write_timing`; a foreach stage's item is its one option's value).

    Before running it, the stage's DVC outputs are unprotected (:func:`unprotect_outputs`), as ``dvc repro`` would:
    a stage run by hand then rewrites private files, never the DVC cache objects its outputs were linked to.

    A user error (:class:`InflowError`) prints its message and exits 1 instead of a traceback.
    """
    parser = argparse.ArgumentParser(prog=f"python -m flows.{flow.name}", description=flow.description)
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    for name, kwargs in options.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, **kwargs)
    args = parser.parse_args()
    assert len(options) <= 1, "a stage flow takes at most one option: its foreach item"
    stage = stage_name(flow.name, *(str(getattr(args, name)) for name in options))
    log.setLevel(logging.INFO)  # the unprotect count is shown, like the core's INFO lines (load)
    unprotect_outputs(stage)
    started = time.perf_counter()
    try:
        flow(params_path=args.params, **{name: getattr(args, name) for name in options})
    except InflowError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    write_timing(stage, time.perf_counter() - started)
