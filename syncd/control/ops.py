"""The ops: one decoded request in, one reply Struct out, on the control loop's thread.

This module owns what each op means (`ping`, `start`, `status`, `cancel`, `history`, `days`,
`verify`, `check`)
and turns every failure into a reply with `status` and `code`: a RequestError becomes its
ErrorReply, Busy a BusyReply, anything else `internal` (logged here with its traceback, never
sent). Runs are admitted by admission.py; `status` reads only memory (RunState); `history`
and `days` read the database through the control loop's own connection (reads.py).
A `verify` with `against` is admitted by reconcile.py and runs on the reconcile thread; its
reply is a `Deferred`: the daemon answers it (`finish`) once the reconciliation has ended or
the request's `wait_s` has passed, serving other requests meanwhile.
Requests that arrived together are answered as a `Batch`: identical reads among them share one
reply, built once after all of them arrived (as fresh as a reply of its own would be).
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg

from .. import __version__
from ..calendar import DayKind, TradingCalendar, beyond_horizon_reason, calendar_days
from ..config import Config
from ..db import days, runs
from ..db.runlock import FoundBy
from ..logs import Event, get_logger
from ..protocol import (
    AnyRequest,
    BusyReply,
    Cancel,
    CancelReply,
    Check,
    CheckReply,
    DaemonInfo,
    Day,
    Days,
    DaysReply,
    ErrorCode,
    ErrorReply,
    History,
    HistoryReply,
    Ok,
    Ping,
    PingReply,
    RequestError,
    Run,
    ScheduledJob,
    Start,
    StartReply,
    Status,
    StatusReply,
    Task,
    VerifiedDay,
    Verify,
    VerifyReply,
    check_range,
    decode_request,
    encode,
    op_name,
    parse_request,
    validate_request,
)
from ..record import RunRecord
from ..telemetry.freshness import SCHEDULED_TASK_TYPES, FreshnessJudge, parse_clock
from ..telemetry.observer import NULL_OBSERVER, Observer
from . import verify
from .admission import Admission, Busy
from .batchreads import NOTHING_AHEAD, ReadAhead, read_ahead
from .reads import ControlDb
from .reconcile import Reconciliations
from .runstate import RunState

INVALID_OP = "invalid"  # the op label of a request that could not be decoded
# Ops whose reply is read from memory or the database and changes nothing that a reply shows: two identical
# requests of these, waiting at the same moment, get the same answer (Batch).
SHARED_OPS = frozenset({"ping", "status", "history", "days", "check"})
MEMORY_OPS = frozenset({"ping", "status"})  # answered from memory alone: a batch answers these first
Reply = Ok | BusyReply | ErrorReply


@dataclass(frozen=True)
class Deferred:
    """A reply that waits, without holding the control loop, until `ready()` or `deadline` (time.monotonic);
    then `Ops.finish` builds it with `answer()`."""

    op: str
    ready: Callable[[], bool]
    deadline: float
    answer: Callable[[], Ok]
    received: float  # time.perf_counter() when the request came


class Ops:
    def __init__(self, config: Config, state: RunState, admission: Admission, db: ControlDb,
                 calendar: TradingCalendar, schedule_jobs: Callable[[], list[ScheduledJob]], database_kind: str,
                 observer: Observer = NULL_OBSERVER, reconciliations: Reconciliations | None = None) -> None:
        self.config = config
        self.reconciliations = reconciliations
        self.state = state
        self.admission = admission
        self.db = db
        self.calendar = calendar
        self.schedule_jobs = schedule_jobs
        self.database_kind = database_kind
        self.zone = admission.zone
        self.observer = observer
        self.freshness = FreshnessJudge(calendar, self.zone, parse_clock(config.alert.late_after))
        self.started = time.monotonic()
        self.log = get_logger()

    def handle(self, frame: bytes) -> Reply | Deferred:
        return self.handle_op(frame)[1]

    def handle_op(self, frame: bytes, ahead: ReadAhead = NOTHING_AHEAD) -> tuple[str, Reply | Deferred]:
        """The request's op name (INVALID_OP when undecodable) and its reply, counted in the metrics; `history`
        and `days` take their rows from `ahead` where the batch read them (batchreads.py)."""
        started = time.perf_counter()
        decoded = INVALID_OP  # a request that decoded keeps its op's name when it fails (a refused `days` is a days)

        def produce() -> tuple[str, Ok | BusyReply | Deferred]:
            nonlocal decoded
            request = parse_request(frame)
            decoded = op_name(type(request))
            return decoded, self.dispatch(validate_request(request), ahead)

        _, reply = self._answer(produce)
        op = decoded
        if isinstance(reply, Deferred):
            return op, Deferred(op, reply.ready, reply.deadline, reply.answer, started)
        self.observer.request_served(op, reply.status, time.perf_counter() - started)
        return op, reply

    def batch(self) -> Batch:
        """A fresh Batch for requests received together (the control loop drains what is waiting, then answers)."""
        return Batch(self)

    def finish(self, deferred: Deferred) -> Reply:
        """The reply a Deferred waited for, built now."""
        _, reply = self._answer(lambda: (deferred.op, deferred.answer()))
        assert not isinstance(reply, Deferred)
        self.observer.request_served(deferred.op, reply.status, time.perf_counter() - deferred.received)
        return reply

    def _answer(self, produce: Callable[[], tuple[str, Ok | BusyReply | Deferred]]) -> tuple[str, Reply | Deferred]:
        """The op's name (INVALID_OP when undecodable) and its reply."""
        op = INVALID_OP
        try:
            op, reply = produce()
            return op, reply
        except RequestError as exc:
            self.log.info(Event.REQUEST_REFUSED, code=exc.code, message=exc.message)
            return op, exc.reply()
        except Exception as exc:  # never a traceback on the wire: one log event here, a code there
            self.log.exception(Event.REQUEST_FAILED, error=str(exc))
            return op, ErrorReply(code=ErrorCode.INTERNAL, message=f"internal error: {type(exc).__name__}")

    def dispatch(self, request: AnyRequest, ahead: ReadAhead = NOTHING_AHEAD) -> Ok | BusyReply | Deferred:
        match request:
            case Ping():
                return PingReply(version=__version__, pid=os.getpid(), uptime_s=self.uptime())
            case Start():
                return self.start(request)
            case Status():
                return self.status()
            case Cancel():
                return self.cancel(request)
            case History():
                return HistoryReply(runs=self.history(request.limit, ahead))
            case Days():
                return DaysReply(days=self.days(request.start_date, request.end_date, ahead))
            case Verify() if request.against is not None:
                return self.reconcile(request)
            case Verify():
                if request.plan_only or request.reconcile_id is not None:
                    raise RequestError(ErrorCode.BAD_REQUEST, "plan_only and reconcile_id go with against (a source name)")
                return VerifyReply(days=self.verify(request.start_date, request.end_date))
            case Check():
                return self.check()
        raise RequestError(ErrorCode.BAD_REQUEST, f"unsupported request {type(request).__name__}")

    @property
    def metrics_url(self) -> str | None:
        listen = self.config.metrics.listen
        return f"http://{listen}/metrics" if listen else None

    def uptime(self) -> float:
        return round(time.monotonic() - self.started, 3)

    def start(self, request: Start) -> StartReply | BusyReply:
        check_range(request.start_date, request.end_date, self.config.sync.max_days)
        repeated = self.admission.repeat_of(request.request_id)
        if repeated is not None:
            return StartReply(run_id=repeated.run_id, task=self._task(repeated))
        try:
            run = self.admission.admit(request.task_type, request.start_date, request.end_date,
                                       requested_by=request.requested_by, request_id=request.request_id)
        except Busy as busy:
            self.log.warning(Event.SYNC_REJECTED, task_type=request.task_type, requested_by=request.requested_by,
                              current_run_id=busy.task.run_id, current_task_type=busy.task.task_type)
            return BusyReply(message=busy_message(busy.task), current_task=busy.task)
        return StartReply(run_id=run.run_id, task=self._task(run))

    def status(self) -> StatusReply:
        snapshot = self.state.snapshot()
        current = snapshot.current.task(self.zone, snapshot.eta_s) if snapshot.current else None
        return StatusReply(state=snapshot.state, current_task=current,
                           last_run=snapshot.last.run(self.zone) if snapshot.last else None,
                           schedule=self.schedule_jobs(),
                           daemon=DaemonInfo(version=__version__, pid=os.getpid(), uptime_s=self.uptime(),
                                             endpoint=self.config.daemon.endpoint, source=self.config.source.name,
                                             database=self.database_kind, metrics=self.metrics_url))

    def cancel(self, request: Cancel) -> CancelReply:
        current = self.state.snapshot().current
        if current is None:
            raise RequestError(ErrorCode.NOT_RUNNING, "no sync is running" + self._elsewhere())
        if request.run_id is not None and request.run_id != current.run_id:
            raise RequestError(ErrorCode.NOT_RUNNING,
                               f"run {request.run_id} is not running (the current run is {current.run_id})")
        self.state.request_cancel()
        get_logger(run_id=current.run_id, task_type=current.task_type).info(Event.CANCEL_REQUESTED)
        return CancelReply(run_id=current.run_id, state="cancelling")

    def history(self, limit: int, ahead: ReadAhead = NOTHING_AHEAD) -> list[Run]:
        recorded = ahead.history(limit)
        if recorded is None or self._orphan_run(recorded):  # an orphan read ahead may be marked by now: read again
            recorded = self.db.call(lambda c: runs.history(c, limit))
        if self._orphan_run(recorded) and self._recover_orphans("history"):
            recorded = self.db.call(lambda c: runs.history(c, limit))
        return [run.run(self.zone) for run in recorded]

    def days(self, start: dt.date, end: dt.date, ahead: ReadAhead = NOTHING_AHEAD) -> list[Day]:
        """Recorded days, with never-planned days filled in from the calendar (pending or skipped)."""
        check_range(start, end, self.config.sync.max_days)
        found = ahead.recorded_days(start, end)
        if found is None or self._orphan_day(found):  # as in history
            found = self.db.call(lambda c: days.days(c, start, end))
        if self._orphan_day(found) and self._recover_orphans("days"):
            found = self.db.call(lambda c: days.days(c, start, end))
        recorded = {d.date: d for d in found}
        return [self._with_horizon(recorded.get(day.isoformat()), day) for day in calendar_days(start, end)]

    def _orphan_run(self, recorded: list[RunRecord]) -> bool:
        """A run recorded `running` that is not this daemon's (an orphan, or another daemon's run)."""
        return any(r.status == "running" and r.run_id != self._current_run_id() for r in recorded)

    def _orphan_day(self, found: list[Day]) -> bool:
        """A day recorded `syncing` by a run that is not this daemon's."""
        return any(d.status == "syncing" and d.run_id != self._current_run_id() for d in found)

    def verify(self, start: dt.date, end: dt.date) -> list[VerifiedDay]:
        """Each day's coverage and anomalies (verify.py); days never checked are checked first, within a budget."""
        check_range(start, end, self.config.sync.max_days)
        return self.db.call(lambda c: verify.verify_days(c, start, end, self.calendar.is_trading_day))

    def reconcile(self, request: Verify) -> VerifyReply | Deferred:
        """`verify` with `against`: the reconciliation planned, queued or polled (reconcile.py); the reply waits up
        to `wait_s` for it to end (a Deferred), then carries the days as verify reads them and its progress."""
        check_range(request.start_date, request.end_date, self.config.sync.max_days)
        if self.reconciliations is None:
            raise RequestError(ErrorCode.BAD_REQUEST, "this daemon does not reconcile")
        reconciliations = self.reconciliations
        item = reconciliations.request(request.start_date, request.end_date, str(request.against),
                                       plan_only=request.plan_only, reconcile_id=request.reconcile_id)
        reconcile_id = item.reconcile_id

        def answer() -> VerifyReply:
            now = reconciliations.current(reconcile_id) or item
            days = self.db.call(lambda c: verify.verify_days(c, request.start_date, request.end_date,
                                                             self.calendar.is_trading_day, reconciled_first=True))
            return VerifyReply(days=days, against=now.against, requests=now.requests, reconciliation=now)

        if item.state in ("planned", "done", "failed", "cancelled") or request.wait_s == 0:
            return answer()
        return Deferred("verify", lambda: reconciliations.finished(reconcile_id), time.monotonic() + request.wait_s,
                        answer, 0.0)

    def _with_horizon(self, recorded: Day | None, day: dt.date) -> Day:
        """A day as recorded; with no record, pending or skipped by the calendar. A pending weekday that no
        calendar confirms says why (calendar.beyond_horizon_reason)."""
        kind = self.calendar.kind(day)
        if recorded is None:
            status = "skipped" if kind is DayKind.CLOSED else "pending"
            recorded = Day(date=day.isoformat(), status=status, rows=0, run_id=None, error=None)
        if recorded.status == "skipped":
            recorded.reason = self.calendar.closed_reason(day)
        elif recorded.status == "pending":  # the reason's text is built only when it is needed
            if kind is DayKind.UNCONFIRMED and recorded.error is None:
                recorded.error = beyond_horizon_reason(day)
            elif kind is not DayKind.UNCONFIRMED and recorded.error is not None and recorded.error == beyond_horizon_reason(day):
                recorded.error = None  # confirmed since it was planned
        return recorded

    def check(self) -> CheckReply:
        """Judge freshness now (telemetry/freshness.py); a database that cannot be read is itself the unhealthy reason."""
        completed = self.freshness.latest_completed(dt.datetime.now(self.zone))
        try:
            day = completed.day
            status = self.db.call(lambda c: days.day_status(c, day)) if day else None
            last = self.db.call(lambda c: runs.last_scheduled_run(c, SCHEDULED_TASK_TYPES))
        except RequestError as exc:
            if exc.code != ErrorCode.DATABASE_UNAVAILABLE:
                raise
            return CheckReply(healthy=False, reason=exc.message, day_status=None, last_scheduled_run=None,
                              latest_completed_trading_day=completed.day.isoformat() if completed.day else None)
        verdict = self.freshness.judge(completed, status, last)
        return CheckReply(healthy=verdict.healthy, reason=verdict.reason, day_status=verdict.day_status,
                          latest_completed_trading_day=completed.day.isoformat() if completed.day else None,
                          last_scheduled_run=last.run(self.zone) if last else None)


    def _task(self, run: RunRecord) -> Task:
        """The in-flight view of `run`, with live progress while it is the current run."""
        snapshot = self.state.snapshot()
        if snapshot.current is not None and snapshot.current.run_id == run.run_id:
            return snapshot.current.task(self.zone, snapshot.eta_s)
        return run.task(self.zone)

    def _current_run_id(self) -> str | None:
        current = self.state.snapshot().current
        return current.run_id if current else None

    def _recover_orphans(self, found_by: FoundBy) -> bool:
        """A `running` row or `syncing` day that is not ours, seen while the run lock is free, belongs to an orphan:
        mark it (runlock.Orphans). True if any."""
        try:
            return bool(self.admission.orphans.recover(found_by))
        except psycopg.OperationalError as exc:
            raise self.db.unavailable(exc) from None

    def _elsewhere(self) -> str:
        """For a refused cancel on a standby: where the run is, so the operator cancels it there."""
        try:
            run = self.db.call(runs.running_run)
        except RequestError:
            return ""
        if run is None:
            return ""
        return f" on this daemon; run {run.run_id} is running on {run.host} (pid {run.pid}): cancel it there"


class Batch:
    """Requests that were waiting together, answered in their order, each as its encoded reply.

    A request identical (byte for byte) to an earlier one of the batch for a read (SHARED_OPS) gets that
    one's encoded reply. The daemon receives the whole batch before answering any of it, so the shared
    reply was built after every request sharing it arrived and before any of them is answered: the
    answer each would have had at that moment. A request that may change what reads show (a start,
    cancel or verify answered ok) ends the sharing: the requests after it are answered anew. Under load
    (bench/control.py: 50 threads polling status, history and days) most of a batch is shared, and the
    loop's database round trips and reply encoding are paid once per batch instead of once per request.
    The distinct `history` and `days` reads left are read together in one round trip (`read_ahead`,
    batchreads.py) once the requests answered from memory have been answered; a change to what reads
    show drops them too.
    """

    def __init__(self, ops: Ops) -> None:
        self._ops = ops
        self._shared: dict[bytes, tuple[str, str, bytes]] = {}  # frame -> (op, reply status, encoded reply)
        self._decoded: dict[bytes, AnyRequest | None] = {}  # frame -> its request (None: refused): decoded once
        self._ahead = NOTHING_AHEAD

    def read_ahead(self, frames: Iterable[bytes]) -> None:
        """Read together, in one round trip, the rows the `history` and `days` requests among `frames` need."""
        requests = [request for frame in frames if (request := self._request(frame)) is not None]
        try:
            self._ahead = read_ahead(self._ops.db, requests, self._ops.config.sync.max_days)
        except Exception as exc:  # never the loop's end: each request then reads on its own and answers for itself
            self._ops.log.exception(Event.REQUEST_FAILED, error=f"reading a batch ahead: {exc}")
            self._ahead = NOTHING_AHEAD

    def from_memory(self, frame: bytes) -> bool:
        """Is `frame` a request answered from memory alone (MEMORY_OPS), never waiting on the database?"""
        request = self._request(frame)
        return request is not None and op_name(type(request)) in MEMORY_OPS

    def _request(self, frame: bytes) -> AnyRequest | None:
        """`frame` decoded and validated, once a batch (None: its op refuses it, with its own reply)."""
        if frame not in self._decoded:
            try:
                self._decoded[frame] = decode_request(frame)
            except RequestError:
                self._decoded[frame] = None
        return self._decoded[frame]

    def answer(self, frame: bytes) -> bytes | Deferred:
        """The encoded reply to `frame` (or a Deferred: a reply that waits, built later by Ops.finish)."""
        started = time.perf_counter()
        shared = self._shared.get(frame)
        if shared is not None:
            op, status, encoded = shared
            self._ops.observer.request_served(op, status, time.perf_counter() - started)
            return encoded
        op, reply = self._ops.handle_op(frame, self._ahead)
        if isinstance(reply, Deferred):
            self._forget()  # a verify against a source: it was admitted (a reconciliation queued)
            return reply
        encoded = encode(reply)
        if op in SHARED_OPS:
            self._shared[frame] = (op, reply.status, encoded)
        elif reply.status == "ok":
            self._forget()
        return encoded

    def _forget(self) -> None:
        """What reads show may have changed: the requests after this one are answered anew."""
        self._shared.clear()
        self._ahead = NOTHING_AHEAD


def busy_message(task: Task) -> str:
    where = f" on {task.host} (pid {task.pid})" if task.host else ""
    return (f"a sync is already running{where}: {task.task_type} {task.run_id} ({task.start_date}..{task.end_date}), "
            "try again when it has finished")


__all__ = ["SHARED_OPS", "Batch", "Ops", "busy_message"]
