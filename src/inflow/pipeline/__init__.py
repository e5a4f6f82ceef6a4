"""One function per pipeline step, composing the core modules; Prefect tasks call exactly these.

Each takes validated config objects and paths, writes its artifacts, and returns a small JSON-able
manifest (never a tensor). Paths come from :mod:`inflow.paths`.
"""
