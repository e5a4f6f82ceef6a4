"""Prefect tasks: each resolves paths, calls one core function (inflow.pipeline), logs, and returns a path or
a small manifest (never a tensor). Prefect's result cache is off: DVC and the store's done marks are the
caches."""
