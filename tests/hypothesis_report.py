"""A pytest plugin that reports how many cases each hypothesis property tried.

Properties increment ``CASES[name]`` once per call (shrinking and replayed examples included);
the totals are printed in the terminal summary, whatever ``-q``/``-s`` say. Register it with
``pytest_plugins = ["tests.hypothesis_report"]`` in the test module that uses it.

PYTEST_DONT_REWRITE: the test module imports ``CASES`` before pytest registers this plugin.
"""

from __future__ import annotations

from collections import Counter

#: Cases tried per property name (e.g. ``"parse_rule"``, ``"sync[sqlite]"``).
CASES: Counter[str] = Counter()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ARG001 - pytest hook
    if CASES:
        counts = " ".join(f"{name}={count}" for name, count in CASES.items())
        terminalreporter.write_line(f"hypothesis cases tried: {counts}")
