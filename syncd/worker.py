"""The daemon's one worker thread: takes a job from the control loop, runs the sync, reports back.

It owns its thread, a one-slot hand-over queue and, from hand-over to the end, the run's
RunLock. The control loop hands a job only when the RunState is idle, so the queue never
holds more than one; after each run (recorded finished) the worker gives the run lock back,
ends the RunState and wakes the control loop through `on_done`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from .logs import get_logger
from .protocol import Run
from .runlock import RunLock
from .runstate import RunState
from .sync import SyncJob

RunJob = Callable[[SyncJob, RunState, RunLock], Run | None]


class Worker:
    def __init__(self, run_job: RunJob, state: RunState, on_done: Callable[[], None]) -> None:
        self._run_job = run_job
        self._state = state
        self._on_done = on_done
        self._jobs: queue.Queue[tuple[SyncJob, RunLock] | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._loop, name="syncd-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: SyncJob, lock: RunLock) -> None:
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

    def _loop(self) -> None:
        while (item := self._jobs.get()) is not None:
            job, lock = item
            log = get_logger(run_id=job.run_id, task_type=job.task_type)
            run: Run | None = None
            try:
                run = self._run_job(job, self._state, lock)
            except Exception as exc:  # never let the one worker thread die
                log.exception("worker_error", error=str(exc))
            finally:
                lock.release()
                log.info("sync_lock_released", status=run.status if run else None)
                self._state.end(run)
                self._on_done()
