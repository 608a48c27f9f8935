"""The freshness poller: a background thread that reads from the database what metrics and the `late` alert need.

Owns its own database connection (short connect and statement timeouts) and one thread, so
neither a scrape nor the control loop ever waits on the database for these facts: it reads
the newest `success` day and each task type's last succeeded run every `refresh_every_s`
(when metrics are on) and whenever poked (a run ended), and keeps them for
`DaemonCollector`. At start-up and at each day's `alert.late_after` it judges the latest
completed trading day (freshness.py) and, if it is not synced, raises the `late` alert, at most
once per trading day: the last day alerted is kept in `state_dir/late-alerted`, so a
restart does not alert the same day twice. A database that cannot be read is logged once
(`health_read_failed`) until it can again; the late judgement is then retried at the next wake.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from ..config import scrub
from ..db import connection, days, runs
from ..logs import Event, get_logger
from .freshness import FreshnessJudge, Verdict
from .metrics import Facts

STATEMENT_TIMEOUT_MS = "5000"
CONNECT_TIMEOUT_S = 5.0
LATE_MARK_FILE = "late-alerted"
RETRY_S = 30.0  # a late judgement the database could not answer is tried again this much later


class FreshnessPoller:
    def __init__(self, dsn: str, judge: FreshnessJudge, *, refresh_every_s: float | None,
                 on_late: Callable[[Verdict], None] | None, state_dir: str | os.PathLike[str], timezone: str,
                 now: Callable[[], dt.datetime] | None = None) -> None:
        self._dsn = dsn
        self._judge = judge
        self._refresh_every_s = refresh_every_s
        self._on_late = on_late
        self._mark = Path(state_dir) / LATE_MARK_FILE
        self._timezone = timezone
        self._now = now or (lambda: dt.datetime.now(judge.zone))
        self._facts: Facts | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._failing = False
        self._thread = threading.Thread(target=self._loop, name="syncd-monitor", daemon=True)  # thread and application_name keep their first name (operators may filter on it)
        self._log = get_logger()

    # --- any thread -------------------------------------------------------------------------
    def facts(self) -> Facts | None:
        return self._facts  # one reference read: the thread swaps in a new frozen Facts

    def latest_completed(self) -> dt.date | None:
        return self._judge.latest_completed(self._now()).day

    def poke(self) -> None:
        """Read again soon (a run ended)."""
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- the thread -------------------------------------------------------------------------
    def _loop(self) -> None:
        judge_late_at: dt.datetime | None = self._now() if self._on_late else None  # start-up first
        try:
            while not self._stop.is_set():
                if self._refresh_every_s is not None:
                    self._read(self._refresh)
                if judge_late_at is not None and self._now() >= judge_late_at:
                    judged = self._read(self._judge_late)
                    judge_late_at = self._next_late_after() if judged else self._now() + dt.timedelta(seconds=RETRY_S)
                self._wake.wait(self._sleep_s(judge_late_at))
                self._wake.clear()
        finally:
            self._close()

    def _sleep_s(self, judge_late_at: dt.datetime | None) -> float | None:
        waits = [w for w in (self._refresh_every_s,) if w is not None]
        if judge_late_at is not None:
            waits.append(max(0.05, (judge_late_at - self._now()).total_seconds()))
        return min(waits) if waits else None

    def _next_late_after(self) -> dt.datetime:
        now = self._now().astimezone(self._judge.zone)
        moment = dt.datetime.combine(now.date(), self._judge.late_after, self._judge.zone)
        return moment if moment > now else dt.datetime.combine(now.date() + dt.timedelta(days=1), self._judge.late_after,
                                                               self._judge.zone)

    def _refresh(self, conn: psycopg.Connection[Any]) -> None:
        self._facts = Facts(latest_synced=days.latest_success_day(conn), last_success=runs.last_success_times(conn),
                            read_at=time.time())

    def _judge_late(self, conn: psycopg.Connection[Any]) -> None:
        completed = self._judge.latest_completed(self._now())
        status = days.day_status(conn, completed.day) if completed.day else None
        verdict = self._judge.judge(completed, status, None)
        day = completed.unconfirmed[0] if completed.unconfirmed else completed.day
        key = day.isoformat() if day else "none"
        repeat = verdict.late and self._already_alerted(key)
        self._log.info(Event.LATE_JUDGED, date=key, day_status=verdict.day_status, late=verdict.late,
                       alert="already sent for this day" if repeat else verdict.late)
        if not verdict.late or repeat:
            return
        assert self._on_late is not None
        self._on_late(verdict)
        self._remember_alerted(key)

    def _already_alerted(self, key: str) -> bool:
        try:
            return self._mark.read_text().strip() == key
        except OSError:
            return False

    def _remember_alerted(self, key: str) -> None:
        tmp = self._mark.with_suffix(".tmp")
        try:
            tmp.write_text(key + "\n")
            os.replace(tmp, self._mark)
        except OSError as exc:  # the alert went; only a restart's repeat of it is at stake
            self._log.warning(Event.HEALTH_READ_FAILED, error=f"cannot record the late alert in {self._mark}: {exc.strerror}")

    def _read(self, action: Callable[[psycopg.Connection[Any]], None]) -> bool:
        """`action` on the poller's connection; False (logged once per outage) if the database failed."""
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = connection.connect(self._dsn, CONNECT_TIMEOUT_S, application_name="syncd-monitor",
                                           statement_timeout=STATEMENT_TIMEOUT_MS, TimeZone=self._timezone)
            action(self._conn)
        except psycopg.Error as exc:
            self._close()
            if not self._failing:
                self._log.warning(Event.HEALTH_READ_FAILED, error=scrub(str(exc).strip(), self._dsn))
            self._failing = True
            return False
        if self._failing:
            self._log.info(Event.HEALTH_READ_RECOVERED)
        self._failing = False
        return True

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None
