"""Unit-suite hooks: lines a test records as ``summary`` (``record_property``) are printed at the end.

The short fuzz run (test_fuzz.py) records its summary line this way, so the test command shows it
(and junit.xml carries it as a property).
"""

from __future__ import annotations

import pytest

SUMMARY = "summary"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for name, value in getattr(report, "user_properties", ()):
                if name == SUMMARY:
                    terminalreporter.write_line(str(value))
