"""The core's logic in-process: admission, ops, RunState and the sync of a run, on a real PostgreSQL.

No syncd subprocess and no socket: these build the daemon's parts as daemon.py wires them
(Admission, Ops, RunState, Syncer, RunLock) on a fresh database, so a change to the core is
checked in seconds. The real-process tests elsewhere prove the product; these pin the logic.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from typing import Any

import msgspec
import psycopg
import pytest
import structlog
import zmq
from dbrows import round_trips

from syncd import daemon as syncd_daemon
from syncd.calendar import TradingCalendar
from syncd.config import Config, DemoConfig
from syncd.control.admission import Admission, Busy
from syncd.control.ops import Ops
from syncd.control.reads import ControlDb
from syncd.control.runstate import RunState
from syncd.db import connection, daywrite, migrations, runlock, runs
from syncd.db.runlock import LockHolder, Orphans, RunLock
from syncd.protocol import (
    OPS,
    REPLY_TYPES,
    REQUEST_TYPES,
    BusyReply,
    ErrorCode,
    ErrorReply,
    HistoryReply,
    Ok,
    PingReply,
    Start,
    StartReply,
    StatusReply,
    encode,
    parse_date,
)
from syncd.record import RunRecord, wire_time
from syncd.run.syncer import Syncer
from syncd.sources.demo import DemoSource
from syncd.telemetry.observer import Observer
from testkit import query

ZONE = zoneinfo.ZoneInfo("Asia/Shanghai")
OCT_9, OCT_13 = dt.date(2025, 10, 9), dt.date(2025, 10, 13)  # Thu..Mon: 3 trading days


def config(dsn: str, **demo: Any) -> Config:
    base = Config()
    return msgspec.structs.replace(
        base, database=msgspec.structs.replace(base.database, dsn=dsn),
        source=msgspec.structs.replace(base.source, demo=DemoConfig(stocks=50, seed=3, **demo)),
        sync=msgspec.structs.replace(base.sync, retries=1, retry_backoff_s=0.0))


class Daemon:
    """The daemon's core parts on one database, the worker replaced by a list of handed-over runs."""

    def __init__(self, dsn: str, **demo: Any) -> None:
        self.config = config(dsn, **demo)
        with connection.connect(dsn) as conn:
            migrations.migrate(conn)
        self.state = RunState()
        self.calendar = TradingCalendar()
        self.db = ControlDb(dsn, self.config)
        self.handed: list[tuple[RunRecord, RunLock]] = []
        self.admission = Admission(self.state, lambda run, lock: self.handed.append((run, lock)), self.db,
                                   self.calendar, ZONE)
        self.ops = Ops(self.config, self.state, self.admission, self.db, self.calendar, lambda: [], "external")
        self.syncer = Syncer(self.config, dsn, DemoSource(self.config.source.demo), self.calendar)

    def work(self) -> RunRecord:
        """Do what the worker does with the run it was handed: sync it, release its lock, end it."""
        run, lock = self.handed.pop()
        try:
            recorded = self.syncer.run(run, self.state, lock)
        finally:
            lock.release()
        self.state.end(recorded)
        return recorded

    def close(self) -> None:
        for _, lock in self.handed:
            lock.release()
        self.db.close()
        self.syncer.close()


@pytest.fixture
def daemon(database: str) -> Iterator[Daemon]:
    made = Daemon(database)
    yield made
    made.close()


# --- the wire, declared once ---------------------------------------------------------------------

def test_every_op_names_its_reply_type_and_the_lists_derive_from_the_union():
    assert set(OPS) >= {"ping", "start", "status", "cancel", "history", "days", "verify"}
    assert OPS == tuple(t.__struct_config__.tag for t in REQUEST_TYPES)
    assert set(REPLY_TYPES) == set(OPS)
    assert all(issubclass(t, Ok) and t.__struct_fields__[0] == "status" for t in REPLY_TYPES.values())
    assert encode(PingReply(version="v", pid=1, uptime_s=0.5)).startswith(b'{"status":"ok",')


@pytest.mark.parametrize("text", ["20251009", "2025-W41-4", "2025-10-9", "2025-02-30", " 2025-10-09"])
def test_one_date_rule_refuses_what_fromisoformat_would_take(text):
    with pytest.raises(ValueError, match="2025"):
        parse_date(text, "start_date")
    assert parse_date("2025-10-09") == OCT_9


# --- admission -----------------------------------------------------------------------------------

def test_admission_records_the_run_hands_it_over_and_marks_the_daemon_busy(daemon, database):
    run = daemon.admission.admit("manual", OCT_9, OCT_13, requested_by="t")
    assert run.trading_days == 3 and run.total_days == 5 and run.started_at is not None
    assert daemon.state.snapshot().state == "running"
    (handed, lock), = daemon.handed
    assert handed == run and handed is not run  # a copy crosses to the worker
    assert query(database, "SELECT status, trading_days FROM sync_runs WHERE run_id = %s", run.run_id) == [("running", 3)]
    assert runlock.run_lock_holder_name(lock.conn) == LockHolder.me().application_name()


def test_a_second_admission_is_busy_with_the_running_task(daemon):
    first = daemon.admission.admit("manual", OCT_9, OCT_13, requested_by="t")
    with pytest.raises(Busy) as busy:
        daemon.admission.admit("scheduler_daily", OCT_9, OCT_9, requested_by="schedule")
    assert busy.value.task.run_id == first.run_id and busy.value.task.task_type == "manual"


def test_another_daemon_holding_the_lock_makes_admission_busy_with_its_recorded_run(daemon, database):
    other = LockHolder(pid=4242, host="host-b")
    with psycopg.connect(database, autocommit=True, application_name=other.application_name()) as holder:
        assert runlock.try_run_lock(holder)
        theirs = RunRecord(run_id="theirs", task_type="manual", requested_by="t", start_date=OCT_9, end_date=OCT_13,
                           host="host-b", pid=4242)
        runs.insert_run(holder, theirs)
        with pytest.raises(Busy) as busy:
            daemon.admission.admit("manual", OCT_9, OCT_9, requested_by="t")
    assert (busy.value.task.run_id, busy.value.task.host, busy.value.task.pid) == ("theirs", "host-b", 4242)
    assert daemon.handed == [] and daemon.state.snapshot().state == "idle"


def test_a_repeated_request_id_gets_its_own_run_back(daemon):
    reply = daemon.ops.start(msgspec.convert({"start_date": "2025-10-09", "end_date": "2025-10-13",
                                              "request_id": "r1"}, type=Start))
    again = daemon.ops.start(msgspec.convert({"start_date": "2025-10-09", "end_date": "2025-10-13",
                                              "request_id": "r1"}, type=Start))
    assert isinstance(reply, StartReply) and isinstance(again, StartReply) and again.run_id == reply.run_id
    daemon.work()
    after = daemon.ops.start(msgspec.convert({"start_date": "2025-10-09", "end_date": "2025-10-13",
                                              "request_id": "r1"}, type=Start))
    assert after.run_id == reply.run_id and len(daemon.handed) == 0


def test_a_run_left_running_by_a_dead_daemon_is_interrupted_when_the_lock_is_free(daemon, database):
    run = daemon.admission.admit("manual", OCT_9, OCT_13, requested_by="t")
    _, lock = daemon.handed.pop()
    lock.release()  # the holder's session ends: what a dead daemon leaves behind
    assert Orphans(database, 5.0).recover("idle check") == [run.run_id]
    assert query(database, "SELECT status FROM sync_runs WHERE run_id = %s", run.run_id) == [("interrupted",)]


@pytest.mark.parametrize("op", ["history", "days"])
def test_an_orphan_found_by_a_read_is_logged_with_the_read_that_found_it(daemon, op):
    """`history` finds an orphan by its `running` row, `days` by a day it left `syncing`: each names itself."""
    run = daemon.admission.admit("manual", OCT_9, OCT_13, requested_by="t")
    _, lock = daemon.handed.pop()
    daemon.db.call(lambda c: daywrite.plan_days(c, run.run_id, [OCT_9], []))
    daemon.db.call(lambda c: daywrite.mark_days_syncing(c, [OCT_9], run.run_id))
    lock.release()
    daemon.state.end(run)  # what another daemon sees: no run of its own, a `running` row, a day `syncing`
    with structlog.testing.capture_logs() as logs:
        daemon.ops.history(5) if op == "history" else daemon.ops.days(OCT_9, OCT_13)
    assert [(e["run_id"], e["found_by"]) for e in logs if e["event"] == "run_interrupted"] == [(run.run_id, op)]


def test_every_read_of_a_batch_shows_an_orphan_as_the_first_of_them_marked_it(daemon):
    """Rows read ahead for a batch that show an orphan are read again: the batch's first read marks it interrupted."""
    run = daemon.admission.admit("manual", OCT_9, OCT_13, requested_by="t")
    _, lock = daemon.handed.pop()
    daemon.db.call(lambda c: daywrite.plan_days(c, run.run_id, [OCT_9], []))
    daemon.db.call(lambda c: daywrite.mark_days_syncing(c, [OCT_9], run.run_id))
    lock.release()
    daemon.state.end(run)
    frames = [b'{"op":"history","limit":5}', b'{"op":"history","limit":6}',
              b'{"op":"days","start_date":"2025-10-09","end_date":"2025-10-09"}',
              b'{"op":"days","start_date":"2025-10-09","end_date":"2025-10-10"}']
    batch = daemon.ops.batch()
    batch.read_ahead(frames)
    history_5, history_6, day_9, days_9_10 = (msgspec.json.decode(batch.answer(frame)) for frame in frames)
    assert [r["status"] for r in history_5["runs"]] == [r["status"] for r in history_6["runs"]] == ["interrupted"]
    assert day_9["days"][0]["status"] == days_9_10["days"][0]["status"] == "failed"


def test_the_lock_holders_name_round_trips():
    holder = LockHolder(pid=4242, host="host-a")
    assert LockHolder.parse(holder.application_name()) == holder
    assert LockHolder.parse("psql") == LockHolder(pid=None, host=None)


# --- ops -----------------------------------------------------------------------------------------

def test_ops_answer_every_failure_with_a_code(daemon):
    assert isinstance(daemon.ops.handle(b'{"op":"ping"}'), PingReply)
    garbage = daemon.ops.handle(b"\xff not json")
    assert isinstance(garbage, ErrorReply) and garbage.code == ErrorCode.BAD_REQUEST
    idle_cancel = daemon.ops.handle(b'{"op":"cancel"}')
    assert isinstance(idle_cancel, ErrorReply) and idle_cancel.code == ErrorCode.NOT_RUNNING
    backwards = daemon.ops.handle(b'{"op":"days","start_date":"2025-10-13","end_date":"2025-10-09"}')
    assert isinstance(backwards, ErrorReply) and backwards.code == ErrorCode.INVALID_RANGE


def test_status_shows_the_run_in_flight_and_then_the_last_run(daemon):
    start = daemon.ops.handle(b'{"op":"start","start_date":"2025-10-09","end_date":"2025-10-13"}')
    assert isinstance(start, StartReply)
    busy = daemon.ops.handle(b'{"op":"start","start_date":"2025-10-09","end_date":"2025-10-09"}')
    assert isinstance(busy, BusyReply) and busy.current_task.run_id == start.run_id
    status = daemon.ops.handle(b'{"op":"status"}')
    assert isinstance(status, StatusReply) and status.state == "running" and status.current_task.run_id == start.run_id
    daemon.work()
    status = daemon.ops.status()
    assert status.state == "idle" and status.last_run.run_id == start.run_id and status.last_run.status == "succeeded"
    assert status.last_run.started_at == start.task.start_time  # one time rule on the wire
    [recorded] = daemon.ops.history(5)
    assert recorded == status.last_run


class ServedRequests(Observer):
    """An observer that lists the (op, status) of every request served."""

    def __init__(self) -> None:
        self.served: list[tuple[str, str]] = []

    def request_served(self, op: str, status: str, seconds: float) -> None:
        self.served.append((op, status))


def test_a_batch_shares_identical_reads_until_a_start_changes_what_they_show(daemon):
    daemon.ops.observer = observer = ServedRequests()
    batch = daemon.ops.batch()
    history, status = b'{"op":"history","limit":5}', b'{"op":"status"}'
    start = b'{"op":"start","start_date":"2025-10-09","end_date":"2025-10-13"}'
    before = batch.answer(history)
    assert batch.answer(history) is before  # one reply, built once, for both
    assert msgspec.json.decode(before, type=HistoryReply).runs == []
    idle = batch.answer(status)
    started = msgspec.json.decode(batch.answer(start), type=StartReply)  # admitted: reads after it are answered anew
    after = batch.answer(history)
    assert [run.run_id for run in msgspec.json.decode(after, type=HistoryReply).runs] == [started.run_id]
    busy = msgspec.json.decode(batch.answer(start))  # refused: it changed nothing, the sharing goes on
    assert busy["status"] == "rejected" and busy["current_task"]["run_id"] == started.run_id
    assert batch.answer(history) is after
    assert msgspec.json.decode(idle, type=StatusReply).state == "idle"
    assert msgspec.json.decode(batch.answer(status), type=StatusReply).state == "running"
    assert batch.answer(b'{"op":"nope"}') is not batch.answer(b'{"op":"nope"}')  # only reads are shared
    assert observer.served == [("history", "ok"), ("history", "ok"), ("status", "ok"), ("start", "ok"), ("history", "ok"),
                               ("start", "rejected"), ("history", "ok"), ("status", "ok"), ("invalid", "error"),
                               ("invalid", "error")]  # each request counted, shared or not
    assert daemon.ops.batch().answer(history) is not after  # a new batch reads anew


def test_a_batch_reads_its_history_and_days_together_and_each_reply_is_the_one_it_would_have_alone(daemon):
    first = daemon.ops.handle(b'{"op":"start","start_date":"2025-10-09","end_date":"2025-10-10"}')
    daemon.work()
    second = daemon.ops.handle(b'{"op":"start","start_date":"2025-10-13","end_date":"2025-10-13"}')
    daemon.work()
    frames = [b'{"op":"history","limit":1}', b'{"op":"history","limit":5}', b'{"op":"history","limit":5}',
              b'{"op":"days","start_date":"2025-10-08","end_date":"2025-10-14"}',
              b'{"op":"days","start_date":"2025-10-10","end_date":"2025-10-10"}',
              b'{"op":"days","start_date":"2025-10-13","end_date":"2025-10-09"}',  # reversed: refused by its op
              b'{"op":"days","start_date":"1980-01-01","end_date":"2025-10-10"}',  # beyond sync.max_days (12,000)
              b'{"op":"history","limit":0}', b'{"op":"nope"}']
    alone = [encode(daemon.ops.handle(frame)) for frame in frames]
    assert [r.run_id for r in msgspec.json.decode(alone[1], type=HistoryReply).runs] == [second.run_id, first.run_id]
    assert [msgspec.json.decode(reply)["status"] for reply in alone[3:]] == ["ok", "ok", "error", "error", "error", "error"]
    conn = daemon.db.call(lambda c: c)
    batch = daemon.ops.batch()
    assert round_trips(conn, lambda _: batch.read_ahead(frames)) == 1  # four distinct reads, one round trip
    together: list[object] = []
    assert round_trips(conn, lambda _: together.extend(batch.answer(frame) for frame in frames)) == 0
    assert together == alone
    long_ranges = [b'{"op":"days","start_date":"1995-01-01","end_date":"2025-10-10"}',  # 11,241 + 11,240 days:
                   b'{"op":"days","start_date":"1995-01-02","end_date":"2025-10-10"}']  # beyond READ_AHEAD_ROWS together
    batch = daemon.ops.batch()
    assert round_trips(conn, lambda _: batch.read_ahead(long_ranges)) == 0  # each reads on its own, one in memory at a time
    assert [batch.answer(frame) for frame in long_ranges] == [encode(daemon.ops.handle(frame)) for frame in long_ranges]


def test_a_batch_reads_anew_after_a_start_and_shares_a_database_that_is_away_as_each_requests_error(daemon, database):
    history, days = b'{"op":"history","limit":5}', b'{"op":"days","start_date":"2025-10-09","end_date":"2025-10-13"}'
    batch = daemon.ops.batch()
    batch.read_ahead([history, days])
    assert msgspec.json.decode(batch.answer(history), type=HistoryReply).runs == []
    started = msgspec.json.decode(batch.answer(b'{"op":"start","start_date":"2025-10-09","end_date":"2025-10-13"}'),
                                  type=StartReply)
    after = msgspec.json.decode(batch.answer(history), type=HistoryReply)  # what was read ahead predates the run
    assert [run.run_id for run in after.runs] == [started.run_id]
    daemon.work()
    assert {d["status"] for d in msgspec.json.decode(batch.answer(days))["days"]} == {"success", "skipped"}
    away = Ops(daemon.config, daemon.state, daemon.admission, ControlDb("postgresql://u:secret@127.0.0.1:9/nowhere",
               daemon.config), daemon.calendar, lambda: [], "external")
    batch = away.batch()
    batch.read_ahead([history, days])
    for frame in (history, days):
        reply = msgspec.json.decode(batch.answer(frame), type=ErrorReply)
        assert reply.code == ErrorCode.DATABASE_UNAVAILABLE and "secret" not in reply.message


def test_the_loop_answers_a_batch_from_memory_first_and_each_peer_in_order(daemon):
    """One burst on a real ROUTER: the requests answered from memory (ping, status) go before those that read the
    database, except behind an earlier request of the same peer (a DEALER may send several)."""
    daemon.ops.observer = observer = ServedRequests()
    context = zmq.Context.instance()
    router = context.socket(zmq.ROUTER)
    router.bind("inproc://batch-order")
    peers = [context.socket(kind) for kind in (zmq.REQ, zmq.DEALER, zmq.REQ)]
    try:
        for peer in peers:
            peer.connect("inproc://batch-order")
        history, days = b'{"op":"history","limit":5}', b'{"op":"days","start_date":"2025-10-09","end_date":"2025-10-13"}'
        peers[0].send(history)
        peers[1].send_multipart([b"", days])
        peers[1].send_multipart([b"", b'{"op":"status"}'])  # behind its own days
        peers[2].send(b'{"op":"ping"}')
        syncd_daemon.Daemon(daemon.config)._serve_waiting(router, daemon.ops)
        assert [op for op, _ in observer.served] == ["ping", "history", "days", "status"]
        assert msgspec.json.decode(peers[0].recv(), type=HistoryReply).runs == []
        assert [msgspec.json.decode(peers[1].recv_multipart()[1])["status"] for _ in range(2)] == ["ok", "ok"]
        assert isinstance(msgspec.json.decode(peers[2].recv(), type=PingReply), PingReply)
    finally:
        for sock in (*peers, router):
            sock.close(linger=0)


def test_wire_times_are_to_the_second_with_the_zones_offset():
    moment = dt.datetime(2025, 10, 9, 12, 0, 0, 123456, tzinfo=dt.UTC)
    assert wire_time(moment, ZONE) == "2025-10-09T20:00:00+08:00"


# --- RunState hands out copies ----------------------------------------------------------------------

def test_run_state_snapshots_are_copies():
    state = RunState()
    record = RunRecord(run_id="r", task_type="manual", requested_by="", start_date=OCT_9, end_date=OCT_13,
                       host="h", pid=1, trading_days=3)
    state.begin(record)
    record.days_done = 99
    snapshot = state.snapshot()
    assert snapshot.current.days_done == 0
    snapshot.current.days_done = 42
    state.day_finished(rows=10, failed=False)
    assert state.snapshot().current.days_done == 1 and state.snapshot().current.progress == round(1 / 3, 4)


# --- the sync of a run -------------------------------------------------------------------------------

def test_a_run_writes_each_trading_day_whole(daemon, database):
    daemon.admission.admit("manual", OCT_9, OCT_13, requested_by="t")
    run = daemon.work()
    assert (run.status, run.days_done, run.days_failed, run.rows) == ("succeeded", 3, 0, 150)
    assert query(database, "SELECT trade_date, count(*) FROM daily_bars GROUP BY 1 ORDER BY 1") == [
        (OCT_9, 50), (dt.date(2025, 10, 10), 50), (OCT_13, 50)]


def test_a_flaky_day_within_the_retries_succeeds(database):
    flaky = Daemon(database, fail_dates=["2025-10-10"], fail_times=1)
    try:
        flaky.admission.admit("manual", OCT_9, OCT_13, requested_by="t")
        assert flaky.work().status == "succeeded"
    finally:
        flaky.close()


def test_a_day_failing_beyond_the_retries_makes_the_run_partial(database):
    failing = Daemon(database, fail_dates=["2025-10-10"])
    try:
        failing.admission.admit("manual", OCT_9, OCT_13, requested_by="t")
        run = failing.work()
        assert (run.status, run.days_done, run.days_failed, run.rows) == ("partial", 3, 1, 100)
        assert query(database, "SELECT status FROM sync_days WHERE date = '2025-10-10'") == [("failed",)]
    finally:
        failing.close()


def test_every_day_failing_makes_the_run_failed(database):
    failing = Daemon(database, fail_dates=["2025-10-09", "2025-10-10", "2025-10-13"])
    try:
        failing.admission.admit("manual", OCT_9, OCT_13, requested_by="t")
        assert failing.work().status == "failed"
    finally:
        failing.close()


def test_a_run_cancelled_before_it_starts_writes_nothing(daemon, database):
    daemon.admission.admit("manual", OCT_9, OCT_13, requested_by="t")
    daemon.state.request_cancel()
    run = daemon.work()
    assert run.status == "cancelled" and run.days_done == 0
    assert query(database, "SELECT count(*) FROM daily_bars") == [(0,)]
    assert query(database, "SELECT count(*) FROM sync_days WHERE status = 'syncing'") == [(0,)]


def test_a_run_that_lost_its_lock_to_another_run_stops_before_writing(daemon, database):
    daemon.admission.admit("manual", OCT_9, OCT_13, requested_by="t")
    run, lock = daemon.handed[0]
    lock.release()
    other = Daemon(database)  # takes the lock: the first run is now an orphan, marked interrupted
    try:
        other.admission.admit("manual", OCT_9, OCT_9, requested_by="t")
        recorded = daemon.work()
        assert recorded.status == "interrupted"
        assert query(database, "SELECT count(*) FROM daily_bars") == [(0,)]
    finally:
        other.close()


def test_connections_are_closed_by_close(database):
    made = Daemon(database)
    made.db.call(lambda c: c.execute("SELECT 1"))
    made.close()
    with psycopg.connect(database, autocommit=True) as conn:
        names = [r[0] for r in conn.execute("SELECT application_name FROM pg_stat_activity "
                                            "WHERE datname = current_database() AND pid <> pg_backend_pid()")]
    assert "syncd" not in names
