"""Flows: wiring roadmap models to notifications under Prefect (flows, tasks, artifacts, CLI).

Defaults for running offline, applied before Prefect is imported and only where the environment
says nothing: no telemetry (it fails and logs an error with no network), and a patient start of
Prefect's temporary server (a cold start with migrations can take longer than Prefect's 20 s).
"""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
