"""The control loop's side of reconciliation: plan a `verify` with `against`, admit it, report its progress.

Owns what happens on the control loop when a client asks for a second opinion (docs/design.md,
"Reconciliation"): the days to compare (the stored ones in the range) and the request plan are
known here before anything is fetched (sources/reference.py: each source's own count; the
stocks a by-stock source would be asked are counted in the database); a plan over
`verify.max_requests` is refused (`invalid_range`, with the count); `plan_only` stops there;
anything else is queued for the reconcile thread (run/reconciler.py), or joins the same
reconciliation when one is already queued or running. After each scheduled daily sync that
wrote days it queues a sample of `verify.sample` stocks against `verify.against`. It never waits
on a source or on the reconcile thread: a reconciliation's progress is read from the board.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Sequence

from ..config import SOURCE_NAMES, Config, SourceName, source_named
from ..db import reconcile
from ..logs import Event, get_logger
from ..protocol import ErrorCode, Reconciliation, RequestError
from ..record import RunRecord
from ..run.reconciler import BOARD_KEEP, FINAL_STATES, ReconcileBoard, ReconcileJob
from ..sources import reference
from ..sources.base import ReferencePlan
from .reads import ControlDb

MAX_WAITING = 8                  # reconciliations queued at once (each bounded by verify.max_requests)
SCHEDULED_TASK = "scheduler_daily"
SCHEDULE = "schedule"            # requested_by of the scheduled samples
WRITTEN = ("succeeded", "partial")


class Reconciliations:
    def __init__(self, config: Config, db: ControlDb, board: ReconcileBoard, submit: Callable[[ReconcileJob], None],
                 zone: dt.tzinfo) -> None:
        self.config = config
        self.db = db
        self.board = board
        self.submit = submit
        self.zone = zone
        self._log = get_logger()

    def request(self, start: dt.date, end: dt.date, against: str, *, plan_only: bool = False,
                reconcile_id: str | None = None, requested_by: str = "") -> Reconciliation:
        """The reconciliation a `verify` with `against` asks for: planned, joined, queued, or the one it polls."""
        name = source_named(against)
        if name is None:
            raise RequestError(ErrorCode.BAD_REQUEST, f"against: unknown source {against!r}; expected one of: "
                                                      f"{', '.join(SOURCE_NAMES)}")
        if reconcile_id is not None:
            return self._polled(reconcile_id, start, end, against)
        days = self.db.call(lambda c: reconcile.stored_days(c, start, end))
        plan, stocks = self._plan(name, days, None)
        self._check_budget(start, end, against, plan)
        planned = self._reconciliation(start, end, against, plan, days, stocks, requested_by)
        if plan_only:
            return planned
        joined = self.board.find(lambda r: r.state in ("queued", "running") and r.requested_by != SCHEDULE
                                 and (r.against, r.start_date, r.end_date) == (against, start.isoformat(), end.isoformat()))
        if joined is not None:
            return joined
        return self._queue(planned, ReconcileJob(planned.reconcile_id, name, days, plan, None, requested_by))

    def after_run(self, run: RunRecord) -> None:
        """A run ended: after a scheduled daily sync that wrote days, reconcile `verify.sample` of its stocks."""
        settings = self.config.verify
        against = settings.against
        if not against or not settings.sample or run.task_type != SCHEDULED_TASK or run.status not in WRITTEN:
            return
        planned_days = set(run.planned_days())
        days = [d for d in self.db.call(lambda c: reconcile.stored_days(c, run.start_date, run.end_date))
                if d in planned_days]
        if not days:
            return
        plan, stocks = self._plan(against, days, settings.sample)
        if plan.requests > settings.max_requests:
            self._log.warning(Event.RECONCILE_REFUSED, against=against, run_id=run.run_id,
                              planned_requests=plan.requests, max_requests=settings.max_requests, cost=plan.cost)
            return
        item = self._reconciliation(days[0], days[-1], against, plan, days, stocks, SCHEDULE)
        self._queue(item, ReconcileJob(item.reconcile_id, against, days, plan, settings.sample, SCHEDULE))

    def finished(self, reconcile_id: str) -> bool:
        item = self.board.get(reconcile_id)
        return item is None or item.state in FINAL_STATES

    def current(self, reconcile_id: str) -> Reconciliation | None:
        return self.board.get(reconcile_id)

    # --- planning ---------------------------------------------------------------------------
    def _plan(self, against: SourceName, days: Sequence[dt.date], sample: int | None) -> tuple[ReferencePlan, int | None]:
        """The request plan, and the stocks to compare (None: every stock of each day). A by-stock source's
        stocks are counted in the database; a sample is at most that many."""
        first = reference.plan(self.config.source, against, len(days), 0)
        if first.by != "by_stock" or not days:
            return first, sample
        stored = self.db.call(lambda c: reconcile.count_codes(c, days, first.coverage))
        stocks = min(stored, sample) if sample is not None else stored
        return reference.plan(self.config.source, against, len(days), stocks), stocks

    def _check_budget(self, start: dt.date, end: dt.date, against: str, plan: ReferencePlan) -> None:
        limit = self.config.verify.max_requests
        if plan.requests > limit:
            raise RequestError(ErrorCode.INVALID_RANGE,
                               f"reconciling {start}..{end} against {against} needs {plan.requests} requests "
                               f"({plan.cost}), more than verify.max_requests = {limit}: narrow the range, or raise "
                               "verify.max_requests within what the source allows a day")

    def _reconciliation(self, start: dt.date, end: dt.date, against: str, plan: ReferencePlan, days: Sequence[dt.date],
                        sample: int | None, requested_by: str) -> Reconciliation:
        return Reconciliation(reconcile_id=self._new_id(), against=against, state="planned", start_date=start.isoformat(),
                              end_date=end.isoformat(), plan=plan.by, cost=plan.cost, planned_requests=plan.requests,
                              days=len(days), stocks=sample, requested_by=requested_by)

    def _queue(self, item: Reconciliation, job: ReconcileJob) -> Reconciliation:
        if not job.days:
            item.state = "done"
            item.errors = [f"no day of {item.start_date}..{item.end_date} holds stored rows: nothing to compare"]
            self.board.put(item)
            return item
        if self.board.count(lambda r: r.state == "queued") >= MAX_WAITING:
            raise RequestError(ErrorCode.BAD_REQUEST, f"{MAX_WAITING} reconciliations are waiting already: ask again "
                                                      "when one has finished")
        item.state = "queued"
        self.board.put(item)
        self.submit(job)
        return item

    def _polled(self, reconcile_id: str, start: dt.date, end: dt.date, against: str) -> Reconciliation:
        item = self.board.get(reconcile_id)
        if item is None or (item.against, item.start_date, item.end_date) != (against, start.isoformat(), end.isoformat()):
            raise RequestError(ErrorCode.BAD_REQUEST,
                               f"no reconciliation {reconcile_id} of {start}..{end} against {against} (the daemon keeps "
                               f"the last {BOARD_KEEP}); ask without reconcile_id to start one")
        return item

    def _new_id(self) -> str:
        return f"rc-{dt.datetime.now(self.zone):%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
