"""What the daemon's parts report as they go, for the metrics and the alerts: the `Observer` interface.

The control loop (requests served, runs found orphaned at admission), the worker (days
written or failed, runs finished, orphans found while idle) and start-up recovery call these
methods. This base class does nothing, so a part built without an observer (tests, tools)
needs no wiring; the daemon passes hub.py's. Every method must return at once: no I/O,
no waiting (an implementation counts, or queues for another thread).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..record import RunRecord


class Observer:
    def request_served(self, op: str, status: str, seconds: float) -> None:
        """One request answered on the control loop: its op ("invalid" when undecodable), reply status, time."""

    def day_finished(self, status: str, rows: int, write_seconds: float | None) -> None:
        """A trading day of a run ended `status` (success, incomplete, failed) with `rows` written; the
        write's duration when it was written."""

    def fallback_asked(self, source: str, outcome: str) -> None:
        """A fallback source was asked for a day (run/fallback.py): filled, partial, empty, refused, failed, skipped."""

    def fallback_day(self, source: str) -> None:
        """A day was written with stocks (or all of it) from the fallback `source`."""

    def run_finished(self, run: RunRecord) -> None:
        """A run of this daemon ended, as recorded (its final status)."""

    def runs_interrupted(self, runs: Sequence[RunRecord]) -> None:
        """Runs left `running` by a dead daemon were just marked interrupted by this one."""

    def reconcile_finished(self, source: str, by_check: Mapping[str, int]) -> None:
        """A reconciliation against `source` ended, having stored these findings (by check)."""


NULL_OBSERVER = Observer()
