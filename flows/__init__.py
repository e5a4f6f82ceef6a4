"""Prefect flows, one per DVC stage: ``python -m flows.<stage> [--params params.yaml] [stage options]``.

Importing this package quiets Prefect's telemetry and analytics before Prefect itself is imported, so a
run with no server or profile set up (an ephemeral server) logs only what matters.
"""

import os

for _key, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "INFO",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": "1",
    # each stage starts a temporary Prefect server with a fresh database; on a busy 2-core machine its migrations
    # can take longer than Prefect's default 20 s wait
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_key, _value)
