"""The daemon's one worker thread: takes a job from the control loop, runs the sync, reports back.

It owns its thread, a one-slot hand-over queue and, from hand-over to the end, the run's
RunLock. The control loop hands a job only when the RunState is idle, so the queue never
holds more than one; after each run (recorded finished) the worker gives the run lock back,
ends the RunState and wakes the control loop through `on_done`. While idle it calls `on_idle`
every `idle_every_s` (housekeeping that may wait on the database, kept off the control loop),
handing it `job_waiting`: long housekeeping (compacting closed years) stops between steps when
a job has come.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from ..control.runstate import RunState
from ..db.runlock import RunLock
from ..logs import Event, get_logger
from ..record import RunRecord

RunJob = Callable[[RunRecord, RunState, RunLock], RunRecord]
Housekeeping = Callable[[Callable[[], bool]], None]  # called with `job_waiting`


class Worker:
    def __init__(self, run_job: RunJob, state: RunState, on_done: Callable[[], None],
                 on_idle: Housekeeping | None = None, idle_every_s: float | None = None) -> None:
        self._run_job = run_job
        self._state = state
        self._on_done = on_done
        self._on_idle = on_idle
        self._idle_every_s = idle_every_s if on_idle is not None else None
        self._jobs: queue.Queue[tuple[RunRecord, RunLock] | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._loop, name="syncd-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: RunRecord, lock: RunLock) -> None:
        """Hand over a job and its run lock; the caller has already marked the RunState busy."""
        self._jobs.put_nowait((job, lock))

    def stop(self, timeout: float) -> bool:
        """Ask the thread to exit after any current run; True if it did within `timeout`."""
        try:
            self._jobs.put(None, timeout=timeout)
        except queue.Full:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def job_waiting(self) -> bool:
        """A job has been handed over and waits for the housekeeping to end."""
        return not self._jobs.empty()

    def _next(self) -> tuple[RunRecord, RunLock] | None:
        """The next job (None: stop), doing the idle housekeeping while none comes."""
        while True:
            try:
                return self._jobs.get(timeout=self._idle_every_s)
            except queue.Empty:
                self._housekeeping()

    def _housekeeping(self) -> None:
        if self._on_idle is None:
            return
        try:
            self._on_idle(self.job_waiting)
        except Exception as exc:  # housekeeping must never end the one worker thread
            get_logger().warning(Event.IDLE_HOUSEKEEPING_FAILED, error=str(exc))

    def _loop(self) -> None:
        if self._jobs.empty():
            self._housekeeping()  # once at start too: a calendar the schedule needs today is asked for now
        while (item := self._next()) is not None:
            job, lock = item
            log = get_logger(run_id=job.run_id, task_type=job.task_type)
            run: RunRecord | None = None
            try:
                run = self._run_job(job, self._state, lock)
            except Exception as exc:  # never let the one worker thread die
                log.exception(Event.WORKER_ERROR, error=str(exc))
            finally:
                lock.release()
                log.info(Event.SYNC_LOCK_RELEASED, status=run.status if run else None)
                self._state.end(run)
                self._on_done()
