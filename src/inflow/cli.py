"""The ``inflow`` command line: run, status, select, report, serve and share an inflow project.

The command line itself stays free of Prefect: it loads the project's ``flows/pipeline.py`` when it runs one.
Every command works on the project at or above the current directory (``--project`` to name another): a
directory with ``dvc.yaml`` and ``.dvc/``. Computation always goes through ``dvc repro``, so a command only
recomputes what changed, and through the ``pipeline`` flow (``flows/pipeline.py``), so each run and each of its
stages is a flow run on one Prefect server. Exit status: 0 done, 1 a stage or a DVC command failed (the message
says what to do), 2 a usage error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from inflow.errors import InflowError
from inflow.ops import add_remote, default_remote, find_project, prefect_server, run_dvc, stage_names, stage_status
from inflow.ops.dvc import QUIET_ENV
from inflow.selection.outputs import METHOD_STAGES, METHODS

app = typer.Typer(name="inflow", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Influence-based training-data selection as cached, versioned Prefect + DVC workflows.")
share = typer.Typer(no_args_is_help=True, help="Share every intermediate (gradient stores included) through a "
                                               "DVC remote: configure it, push to it, pull from it.")
app.add_typer(share, name="share")

ProjectOpt = Annotated[Path | None, typer.Option("--project", "-p", help="the project directory (default: the "
                                                 "one at or above the current directory)", show_default=False)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars or stage logs; errors and the "
                                        "final summary only (for scheduled runs)")]
RemoteOpt = Annotated[str | None, typer.Option("--remote", "-r", help="the DVC remote (default: the project's "
                                               "default remote)", show_default=False)]
SERVE_PORT = 4200  # Prefect's own default: the UI a long-lived `inflow serve` starts is where people look for it


def _project(project: Path | None) -> Path:
    return find_project(project or Path.cwd())


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(1)


def _quiet(quiet: bool) -> None:
    if quiet:
        os.environ.update(QUIET_ENV)


def _run_pipeline(root: Path, targets: list[str], push: bool, remote: str | None, quiet: bool) -> dict:
    """The ``pipeline`` flow of ``root``'s flows/, in this process (``PREFECT_API_URL`` must already be set)."""
    os.chdir(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from flows.pipeline import run_pipeline  # imports Prefect: after PREFECT_API_URL is set

    return run_pipeline(project=str(root), targets=targets, push=push, remote=remote, quiet=quiet)


def _print_summary(root: Path) -> None:
    from inflow.report.summary import format_table

    path = root / "reports" / "summary.json"
    if path.exists():
        summary = json.loads(path.read_text())
        typer.echo(format_table(summary["rows"]))
        for note in summary.get("notes", []):
            typer.echo(f"note: {note}")


@app.command()
def run(targets: Annotated[list[str] | None, typer.Argument(help="stages to bring up to date, with what they "
                                                             "depend on (default: every stage)")] = None,
        project: ProjectOpt = None, quiet: QuietOpt = False,
        push: Annotated[bool, typer.Option(help="push every cached output to the DVC remote afterwards")] = False,
        remote: RemoteOpt = None) -> None:
    """Run the pipeline: `dvc repro` (only what changed recomputes), on one Prefect server, then print the report."""
    _quiet(quiet)
    try:
        root = _project(project)
        with prefect_server(root / ".prefect" / "server.log") as api_url:
            os.environ["PREFECT_API_URL"] = api_url
            if not quiet:
                typer.echo(f"Prefect UI: {api_url.removesuffix('/api')} (every stage is a flow run there)")
            result = _run_pipeline(root, list(targets or []), push, remote, quiet)
    except InflowError as exc:
        raise _fail(exc) from None
    typer.echo(f"ran {len(result['ran'])} stage(s): {', '.join(result['ran']) or 'none, everything up to date'}")
    if result.get("pushed_to"):
        typer.echo(f"pushed to the DVC remote {result['pushed_to']!r}")
    _print_summary(root)


@app.command()
def status(project: ProjectOpt = None,
           cloud: Annotated[bool, typer.Option("--cloud", "-c", help="also compare the local cache with the DVC "
                                               "remote")] = False,
           remote: RemoteOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Which stages are up to date and which would rerun (and why), from DVC. Exit 1 when any would rerun."""
    try:
        root = _project(project)
        names, changed = stage_names(root), stage_status(root)
        remote_status = None
        if cloud:
            name = remote or default_remote(root)
            if name is None:
                raise InflowError("no DVC remote configured: add one with `inflow share remote NAME URL`")
            remote_status = run_dvc(root, "status", "--cloud", "-r", name).check().output.strip()
    except InflowError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps({"stages": {n: changed.get(n, "up to date") for n in names},
                               "remote": remote_status}, indent=2))
    else:
        width, locked = max(len(n) for n in names), _locked_stages(root)
        for name in names:
            state = ("up to date" if name not in changed else "never run" if name not in locked
                     else "rerun: " + _why(changed[name]))
            typer.echo(f"{name.ljust(width)}  {state}")
        if remote_status is not None:
            typer.echo(f"remote: {remote_status}")
    if changed:
        raise typer.Exit(1)


def _locked_stages(root: Path) -> set[str]:
    """The stages dvc.lock records a run of."""
    import yaml

    lock = root / "dvc.lock"
    return set(((yaml.safe_load(lock.read_text()) or {}).get("stages") or {}) if lock.exists() else ())


def _why(changes: list) -> str:
    parts = []
    for change in changes:
        if isinstance(change, dict):
            for kind, what in change.items():
                items = ", ".join(f"{k} {v}" for k, v in what.items()) if isinstance(what, dict) else str(what)
                parts.append(f"{kind}: {items}")
        else:
            parts.append(str(change))
    return "; ".join(parts)


@app.command()
def select(method: Annotated[str, typer.Option("--method", "-m", help=f"one of {', '.join(METHODS)}")],
           target: Annotated[str | None, typer.Option("--target", "-t", help="a target task (default: every "
                                                      "target)", show_default=False)] = None,
           top: Annotated[int, typer.Option(help="how many selected rows to print per target")] = 10,
           project: ProjectOpt = None, quiet: QuietOpt = False) -> None:
    """Bring one method's selection up to date (only what it depends on runs) and print its top rows."""
    if method not in METHOD_STAGES:
        raise _fail(InflowError(f"unknown method {method!r}: pick one of {', '.join(METHODS)}"))
    _quiet(quiet)
    import polars as pl

    from inflow.selection import read_selection

    try:
        root = _project(project)
        with prefect_server(root / ".prefect" / "server.log") as api_url:
            os.environ["PREFECT_API_URL"] = api_url
            _run_pipeline(root, [METHOD_STAGES[method]], False, None, quiet)
        table = read_selection(root / "data" / "selections" / method)
        targets = sorted(table["target"].unique())
        if target is not None:
            if target not in targets:
                raise InflowError(f"no selection of {method} for target {target!r}; it has: {', '.join(targets)}")
            table = table.filter(pl.col("target") == target)
    except InflowError as exc:
        raise _fail(exc) from None
    for name, rows in table.sort("target", "rank").group_by("target", maintain_order=True):
        path = root / "data" / "selections" / method / f"{name[0]}.jsonl"
        typer.echo(f"{method} for {name[0]}: {rows.height} rows -> {path.relative_to(root)} (rank: the order "
                   "select.subtask_rule picked them in; score: the row's best subtask score)")
        typer.echo(str(rows.head(top).select("rank", "example_id", "score")))


@app.command()
def report(project: ProjectOpt = None, quiet: QuietOpt = False) -> None:
    """Bring the report up to date (fine-tuning and evaluating what it needs) and print it."""
    _quiet(quiet)
    try:
        root = _project(project)
        with prefect_server(root / ".prefect" / "server.log") as api_url:
            os.environ["PREFECT_API_URL"] = api_url
            _run_pipeline(root, ["report"], False, None, quiet)
    except InflowError as exc:
        raise _fail(exc) from None
    _print_summary(root)
    typer.echo(f"figure: {root / 'reports' / 'summary.png'}")


@app.command()
def serve(cron: Annotated[str, typer.Option(help="when to rerun, a cron expression, e.g. '0 3 * * *' (03:00 "
                                            "daily)")],
          name: Annotated[str, typer.Option(help="the deployment's name")] = "scheduled",
          targets: Annotated[list[str] | None, typer.Option("--target", help="stages to rerun (repeat; default: "
                                                             "every stage)", show_default=False)] = None,
          push: Annotated[bool, typer.Option(help="push to the DVC remote after each run")] = True,
          remote: RemoteOpt = None, project: ProjectOpt = None,
          port: Annotated[int, typer.Option(help="port of the local Prefect server started when PREFECT_API_URL "
                                            "is not set")] = SERVE_PORT,
          timezone: Annotated[str, typer.Option(help="the cron schedule's time zone")] = "UTC") -> None:
    """Serve the pipeline as a Prefect deployment rerun on a cron schedule (runs until stopped with Ctrl-C).

    Each run is `dvc repro` (only stages whose inputs changed recompute; a grown pool extracts only its new rows),
    `dvc push` to the remote, and the report. With PREFECT_API_URL unset, a local server is started on --port
    and kept while serving; point PREFECT_API_URL at a long-lived server to keep the run history elsewhere.
    """
    _quiet(True)
    try:
        root = _project(project)
        with prefect_server(root / ".prefect" / "server.log", port=port) as api_url:
            os.environ["PREFECT_API_URL"] = api_url
            os.chdir(root)
            sys.path.insert(0, str(root))
            from flows.pipeline import serve_pipeline

            typer.echo(f"serving deployment pipeline/{name} ({cron}, {timezone}) on {api_url.removesuffix('/api')}")
            serve_pipeline(name, cron, timezone, project=str(root), targets=list(targets or []), push=push,
                           remote=remote)
    except (InflowError, ValueError) as exc:
        raise _fail(exc) from None


@share.command("remote")
def share_remote(name: Annotated[str, typer.Argument(help="a name for the remote, e.g. team")],
                 url: Annotated[str, typer.Argument(help="where it lives: s3://bucket/path, gs://..., "
                                                    "/mnt/shared/inflow, ...")],
                 endpoint_url: Annotated[str | None, typer.Option(help="an S3-compatible server's URL (MinIO, "
                                                                  "Ceph)", show_default=False)] = None,
                 default: Annotated[bool, typer.Option(help="make it the default remote")] = True,
                 local: Annotated[bool, typer.Option(help="write it to .dvc/config.local (not committed) "
                                                     "instead of .dvc/config")] = False,
                 project: ProjectOpt = None) -> None:
    """Add (or replace) a DVC remote; commit .dvc/config so teammates get it with the repository."""
    try:
        add_remote(_project(project), name, url, endpoint_url=endpoint_url, default=default, local=local)
    except InflowError as exc:
        raise _fail(exc) from None
    typer.echo(f"remote {name!r} -> {url}" + (" (default)" if default else ""))


def _transfer(verb: str, project: Path | None, remote: str | None, targets: list[str] | None, jobs: int | None,
              quiet: bool) -> None:
    try:
        root = _project(project)
        name = remote or default_remote(root)
        if name is None:
            raise InflowError("no DVC remote configured: add one with `inflow share remote NAME URL`")
        args = [verb, "-r", name, *(["-j", str(jobs)] if jobs else []), *(targets or [])]
        run_dvc(root, *args, echo=not quiet).check()
    except InflowError as exc:
        raise _fail(exc) from None
    typer.echo(f"{verb} with {name!r}: done")


TargetsArg = Annotated[list[str] | None, typer.Argument(help="stages or outputs (default: everything)")]
JobsOpt = Annotated[int | None, typer.Option("--jobs", "-j", help="parallel transfers", show_default=False)]


@share.command("push")
def share_push(targets: TargetsArg = None, remote: RemoteOpt = None, jobs: JobsOpt = None, project: ProjectOpt = None,
               quiet: QuietOpt = False) -> None:
    """Upload every cached output (gradient stores, checkpoints, selections) to the remote."""
    _transfer("push", project, remote, targets, jobs, quiet)


@share.command("pull")
def share_pull(targets: TargetsArg = None, remote: RemoteOpt = None, jobs: JobsOpt = None, project: ProjectOpt = None,
               quiet: QuietOpt = False) -> None:
    """Download the outputs of this commit's dvc.lock from the remote: afterwards `inflow status` is clean and
    nothing already computed by a teammate is computed again."""
    _transfer("pull", project, remote, targets, jobs, quiet)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
