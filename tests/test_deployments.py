"""prefect.yaml and `roadmap serve` declare the same deployments, with a safe nightly schedule."""

from __future__ import annotations

import importlib
from pathlib import Path

import pendulum
import yaml

from flows.deployments import NIGHTLY_CRON, NIGHTLY_SCHEDULE_SLUG, NIGHTLY_TIMEZONE, deployments

ROOT = Path(__file__).resolve().parent.parent


def _prefect_yaml() -> dict:
    return {d["name"]: d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))["deployments"]}


def test_prefect_yaml_and_serve_agree():
    declared = _prefect_yaml()
    served = {d.name: d for d in deployments()}
    assert set(declared) == set(served) == {
        "nightly-status-check", "record-status", "nightly-portfolio-check", "portfolio-group",
    }
    for name, spec in declared.items():
        module, function = spec["entrypoint"].removesuffix(".py").replace("/", ".").split(":")
        flow = getattr(importlib.import_module(module.replace(".py", "")), function)
        assert flow.name == served[name].flow_name, name
    # The portfolio's children must run side by side: no schedule, no limit of 1.
    assert "concurrency_limit" not in declared["portfolio-group"] and "schedules" not in declared["portfolio-group"]
    assert served["portfolio-group"].concurrency_limit is None and not served["portfolio-group"].schedules
    nightly_yaml = declared["nightly-status-check"]
    assert nightly_yaml["concurrency_limit"] == 1
    assert nightly_yaml["schedules"] == [
        {"cron": NIGHTLY_CRON, "timezone": NIGHTLY_TIMEZONE, "slug": NIGHTLY_SCHEDULE_SLUG, "active": True}
    ]
    nightly = served["nightly-status-check"]
    assert nightly.concurrency_limit == 1
    (schedule,) = nightly.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.slug) == (
        NIGHTLY_CRON, NIGHTLY_TIMEZONE, NIGHTLY_SCHEDULE_SLUG,
    )


def test_nightly_run_avoids_the_dst_hours_all_year():
    # Every run of 2024 and 2025 falls outside 01:00-03:00 local, where DST transitions happen.
    minute, hour = (int(part) for part in NIGHTLY_CRON.split()[:2])
    day = pendulum.datetime(2024, 1, 1, tz=NIGHTLY_TIMEZONE)
    while day.year < 2026:
        run = day.set(hour=hour, minute=minute)
        assert not 1 <= run.hour < 3, run
        day = day.add(days=1)
    assert NIGHTLY_TIMEZONE == "Africa/Cairo"
