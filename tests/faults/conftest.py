"""The fault suite prints its figures (probes per class, failures, counters) at the end."""

from __future__ import annotations

from typing import Any

from .probe import PROBES, summary_lines


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not PROBES:
        return
    terminalreporter.section("saereg fault suite")
    for line in summary_lines():
        terminalreporter.write_line(line)
