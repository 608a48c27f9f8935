"""The one object shared by the worker thread and the control loop: the run in flight.

The worker writes progress here; the control loop reads snapshots to answer `status` and to
decide whether a start is busy, without ever waiting on the worker or the database. It holds
RunRecords (record.py) and only ever hands out copies, so no record crosses threads while
one side changes it. Every field is guarded by one lock held only for a few assignments. It
holds no connections and does no I/O.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Literal, NamedTuple

from ..record import RunRecord

State = Literal["idle", "running", "cancelling"]


class Snapshot(NamedTuple):
    state: State
    current: RunRecord | None  # a copy
    last: RunRecord | None     # a copy of the last finished run (this daemon's, or the newest at start-up)
    eta_s: float | None


class RunState:
    def __init__(self, last_run: RunRecord | None = None) -> None:
        self._lock = threading.Lock()
        self._run: RunRecord | None = None
        self._last_run = last_run
        self._cancel = threading.Event()
        self._first_day_at: float | None = None
        self._finished = threading.Event()
        self._finished.set()

    # --- control loop side ---------------------------------------------------------------
    def begin(self, run: RunRecord) -> None:
        """Mark a run active (a copy of `run` is kept); called by the control loop before handing it over."""
        with self._lock:
            if self._run is not None:
                raise RuntimeError("a run is already active")
            self._run = run.copy()
            self._first_day_at = None
            self._cancel.clear()
            self._finished.clear()

    def request_cancel(self) -> str | None:
        """Ask the active run to stop; return its run_id (None when idle)."""
        with self._lock:
            if self._run is None:
                return None
            self._cancel.set()
            return self._run.run_id

    def snapshot(self) -> Snapshot:
        with self._lock:
            last = self._last_run.copy() if self._last_run else None
            if self._run is None:
                return Snapshot("idle", None, last, None)
            state: State = "cancelling" if self._cancel.is_set() else "running"
            return Snapshot(state, self._run.copy(), last, self._eta(self._run))

    def wait_finished(self, timeout: float) -> bool:
        return self._finished.wait(timeout)

    # --- worker side ---------------------------------------------------------------------
    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def wait_cancel(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; return True early if the run is cancelled."""
        return self._cancel.wait(timeout)

    def planned(self, trading_days: int) -> None:
        with self._lock:
            if self._run is not None:
                self._run.trading_days = trading_days

    def day_started(self, day: dt.date) -> None:
        with self._lock:
            if self._run is not None:
                self._run.current_date = day
                if self._first_day_at is None:
                    self._first_day_at = time.monotonic()

    def asking_fallback(self, source: str | None) -> None:
        """A fallback source is being asked for the current day (None: no longer)."""
        with self._lock:
            if self._run is not None:
                self._run.fallback_source = source

    def day_finished(self, rows: int, failed: bool) -> None:
        with self._lock:
            if self._run is not None:
                self._run.days_done += 1
                self._run.days_failed += int(failed)
                self._run.rows += rows

    def end(self, run: RunRecord | None) -> None:
        """The run is over (recorded as `run`); the daemon is idle again."""
        with self._lock:
            if run is not None:
                self._last_run = run.copy()
            self._run = None
            self._cancel.clear()
        self._finished.set()

    def _eta(self, run: RunRecord) -> float | None:
        if self._first_day_at is None or run.days_done == 0 or not run.trading_days:
            return None
        per_day = (time.monotonic() - self._first_day_at) / run.days_done
        return round(per_day * (run.trading_days - run.days_done), 1)
