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
}.items():
    os.environ.setdefault(_key, _value)
