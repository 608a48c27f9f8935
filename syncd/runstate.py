"""The one shared object between the worker thread and the control loop: the run in flight.

The worker writes progress here; the control loop reads snapshots to answer `status` and to
decide whether a start is busy, without ever waiting on the worker or the database. Every
field is guarded by one lock held only for a few assignments. It holds no connections and
does no I/O.
"""

from __future__ import annotations

import threading
import time
from typing import Literal

import msgspec

from .protocol import Run, Task

State = Literal["idle", "running", "cancelling"]


class RunState:
    def __init__(self, last_run: Run | None = None) -> None:
        self._lock = threading.Lock()
        self._task: Task | None = None
        self._last_run = last_run
        self._cancel = threading.Event()
        self._first_day_at: float | None = None
        self._finished = threading.Event()
        self._finished.set()

    # --- control loop side ---------------------------------------------------------------
    def begin(self, task: Task) -> None:
        """Mark a run active; called by the control loop just before handing the job over."""
        with self._lock:
            if self._task is not None:
                raise RuntimeError("a run is already active")
            self._task = task
            self._first_day_at = None
            self._cancel.clear()
            self._finished.clear()

    def request_cancel(self) -> str | None:
        """Ask the active run to stop; return its run_id (None when idle)."""
        with self._lock:
            if self._task is None:
                return None
            self._cancel.set()
            return self._task.run_id

    def snapshot(self) -> tuple[State, Task | None, Run | None]:
        with self._lock:
            task, last = self._task, self._last_run
            if task is None:
                return "idle", None, last
            copy = msgspec.structs.replace(task, eta_s=self._eta(task))
            return ("cancelling" if self._cancel.is_set() else "running"), copy, last

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
            if self._task is not None:
                self._task.trading_days = trading_days

    def day_started(self, day: str) -> None:
        with self._lock:
            if self._task is not None:
                self._task.current_date = day
                if self._first_day_at is None:
                    self._first_day_at = time.monotonic()

    def day_finished(self, rows: int, failed: bool) -> None:
        with self._lock:
            task = self._task
            if task is None:
                return
            task.days_done += 1
            task.days_failed += int(failed)
            task.rows += rows
            task.progress = round(task.days_done / task.trading_days, 4) if task.trading_days else 1.0

    def end(self, run: Run | None) -> None:
        """The run is over (recorded as `run`); the daemon is idle again."""
        with self._lock:
            if run is not None:
                self._last_run = run
            self._task = None
            self._cancel.clear()
        self._finished.set()

    def _eta(self, task: Task) -> float | None:
        if self._first_day_at is None or task.days_done == 0 or not task.trading_days:
            return None
        per_day = (time.monotonic() - self._first_day_at) / task.days_done
        return round(per_day * (task.trading_days - task.days_done), 1)
