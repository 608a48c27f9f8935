"""syncd behind a real PgBouncer: everything works through a transaction pooler but the run lock,
which lives on `database.lock_dsn` and is checked at start to be one real session.

Debian's PgBouncer 1.18 runs in front of the test PostgreSQL with `ignore_startup_parameters =
extra_float_digits` (a startup `options` parameter is then refused, as in production) and a
small pool, so server connections are shared between syncd's connections and other clients.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import BASE_CONFIG, merge, query
from dbrows import round_trips
from pgbouncer import PGBOUNCER, PgBouncer
from test_fault_startup import assert_refused, run_syncd

from syncd.config import Config, ConfigError, DatabaseConfig
from syncd.control.reads import ControlDb
from syncd.db import connection, daywrite, migrations, partitions, runlock, runs
from syncd.db.connection import OptionsError, inherit_options, parse_options
from syncd.db.daywrite import DayWrite
from syncd.db.poolercheck import check_lock_session
from syncd.db.runlock import RunLock

EX_CONFIG = 78
SYNC_RANGE = ("2025-09-01", "2025-09-30")
LONG_RANGE = ("2025-08-01", "2025-10-31")
SLOW = {"source": {"demo": {"day_delay_s": 0.05}}}
POOLER_REFUSAL = "reaches PostgreSQL through a transaction pooler"


@pytest.fixture
def bouncer_factory(pg_dsn: str, database: str, short_tmp: Path) -> Iterator[Callable[..., PgBouncer]]:
    """`bouncer_factory(pool_mode="transaction", pool_size=2)`: a PgBouncer in front of the test server."""
    if PGBOUNCER is None:
        warnings.warn("pgbouncer is not installed: the pooler tests are SKIPPED (apt-get install pgbouncer)", stacklevel=2)
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer); the pooler tests need it")
    started: list[PgBouncer] = []

    def start(pool_mode: str = "transaction", pool_size: int = 2) -> PgBouncer:
        bouncer = PgBouncer.start(pg_dsn, short_tmp / f"pgbouncer{len(started)}", pool_mode=pool_mode, pool_size=pool_size)
        started.append(bouncer)
        return bouncer

    yield start
    for bouncer in started:
        bouncer.stop()


@pytest.fixture
def bouncer(bouncer_factory: Callable[..., PgBouncer]) -> PgBouncer:
    return bouncer_factory()


def _run(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _with_options(dsn: str, options: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, options=options)


@contextlib.contextmanager
def _busy(dsn: str, holders: int, churners: int) -> Iterator[None]:
    """Other clients of the pooler: `holders` keep a server connection in an open transaction, `churners`
    run short transactions in a loop (so server connections change hands all the time)."""
    stop = threading.Event()
    held = [psycopg.connect(dsn) for _ in range(holders)]
    for conn in held:
        conn.execute("SELECT 1")  # opens the transaction: this client keeps its server connection

    def churn() -> None:
        with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as conn:
            while not stop.is_set():
                conn.execute("SELECT pg_sleep(0.002)")

    threads = [threading.Thread(target=churn) for _ in range(churners)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for conn in held:
            conn.close()


# --- connecting and serving through a transaction pooler -----------------------------------

def test_syncd_syncs_and_answers_history_and_days_through_a_transaction_pooler(bouncer, database, syncd_factory):
    daemon = syncd_factory({"database": {"dsn": bouncer.dsn(database), "lock_dsn": database}})
    client = daemon.client()
    client.start(*SYNC_RANGE)
    last = daemon.wait_idle().last_run
    assert (last.status, last.days_done) == ("succeeded", 22)
    for _ in range(30):  # psycopg prepares a statement after 5 executions: shared server connections then collide
        assert client.history(limit=5)[0].run_id == last.run_id
        assert len(client.days(*SYNC_RANGE)) == 30
    assert query(database, "SELECT count(*) FROM sync_days WHERE status = 'success'") == [(22,)]
    assert "DuplicatePreparedStatement" not in daemon.log_text()
    [checked] = daemon.events("lock_session_checked")
    assert checked["notify_ms"] < 5000


def test_the_control_loops_statement_timeout_holds_in_every_transaction_through_the_pooler(bouncer, database):
    config = Config(database=DatabaseConfig(dsn=bouncer.dsn(database)))
    db = ControlDb(bouncer.dsn(database), config)
    with _busy(bouncer.dsn(database), holders=0, churners=1):  # another client shares the two server connections
        for _ in range(20):
            assert db.call(lambda c: c.execute("SHOW statement_timeout").fetchone()[0]) == "5s"
            assert db.call(lambda c: c.execute("SHOW TimeZone").fetchone()[0]) == "Asia/Shanghai"
    with psycopg.connect(bouncer.dsn(database), autocommit=True) as other:  # nothing leaked into the pool
        assert other.execute("SHOW statement_timeout").fetchone()[0] == "0"
    db.close()


def test_a_long_statement_is_cut_by_the_statement_timeout_through_the_pooler(bouncer, database):
    with connection.connect(bouncer.dsn(database), statement_timeout="200") as conn:
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(3)")
        with pytest.raises(psycopg.errors.QueryCanceled), conn.transaction():
            conn.execute("SELECT 1")
            conn.execute("SELECT pg_sleep(3)")
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is usable afterwards


def test_the_dsns_own_options_apply_inside_every_transaction_through_the_pooler(bouncer, database):
    _run(database, "CREATE SCHEMA other", "CREATE TABLE other.marker (x int)")
    dsn = _with_options(bouncer.dsn(database), r"-c search_path=other,public -c application_name=my\ app")
    with connection.connect(dsn, TimeZone="UTC") as conn, _busy(bouncer.dsn(database), holders=0, churners=1):
        for _ in range(10):
            assert conn.execute("SELECT to_regclass('marker') IS NOT NULL, current_setting('TimeZone')").fetchone() == (True, "UTC")
            with conn.transaction():
                assert conn.execute("SHOW search_path").fetchone()[0] == "other,public"
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO marker VALUES (%s)", [(1,), (2,)])
                with cur.copy("COPY marker (x) FROM STDIN") as copy:
                    copy.write_row((3,))
    assert query(database, "SELECT count(*) FROM other.marker") == [(30,)]


def test_a_setting_the_server_refuses_fails_the_transaction_with_its_name(bouncer, database):
    with connection.connect(bouncer.dsn(database), no_such_setting="1") as conn:
        with pytest.raises(psycopg.errors.UndefinedObject, match="no_such_setting"):
            conn.execute("SELECT 1")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with pytest.raises(psycopg.errors.UndefinedObject, match="no_such_setting"), conn.transaction():
            conn.execute("SELECT 1")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_a_failed_statement_outside_a_transaction_leaves_the_connection_usable(bouncer, database):
    with connection.connect(bouncer.dsn(database), statement_timeout="1000") as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.execute("SELECT current_setting('statement_timeout')").fetchone() == ("1s",)


def test_reads_together_take_one_round_trip_and_hold_the_settings_through_the_pooler(bouncer, database):
    """The control loop's batch of reads (connection.read_together): one query, the settings inside its transaction."""
    statements = [("SELECT current_setting('statement_timeout') AS t, current_setting('TimeZone') AS z", ()),
                  ("SELECT x FROM generate_series(1, %s) AS x", (3,)), ("SELECT %s::date AS d, %s::text AS s", (dt.date(2025, 10, 9), "it's"))]
    with connection.connect(bouncer.dsn(database), statement_timeout="1000", TimeZone="Asia/Shanghai") as conn, \
            _busy(bouncer.dsn(database), holders=0, churners=1):
        found: list[object] = []
        for _ in range(10):
            found.clear()
            assert round_trips(conn, lambda c: found.extend(connection.read_together(c, statements))) == 1
            assert found == [[{"t": "1s", "z": "Asia/Shanghai"}], [{"x": 1}, {"x": 2}, {"x": 3}],
                             [{"d": dt.date(2025, 10, 9), "s": "it's"}]]
        with pytest.raises(psycopg.errors.DivisionByZero):
            connection.read_together(conn, [("SELECT 1 AS one", ()), ("SELECT 1 / 0", ())])
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert connection.read_together(conn, [("SELECT 2 AS two", ())]) == [[{"two": 2}]]


class WriteFenceOnly:
    """A day write's fence that only holds the write fence (no run lock to probe: the full check runs)."""

    def __call__(self, conn: psycopg.Connection[Any]) -> None:
        runlock.hold_write_fence(conn)

    def probe(self) -> None:
        return None


def test_the_settings_cost_no_extra_round_trip(database):
    """BEGIN and the settings share a pipeline; a statement outside a transaction sends BEGIN, settings,
    statement and COMMIT in one: no more round trips than a plain autocommit connection."""
    rows = [("000001", 10.0, 10.5, 9.8, 10.2, 10.0, 1000, 10200.0, 0.1, 2.0)]
    day = dt.date(2025, 10, 9)
    with psycopg.connect(database, autocommit=True) as plain, connection.connect(database, TimeZone="Asia/Shanghai") as pooled:
        migrations.migrate(plain)
        partitions.ensure_year(plain, day.year)  # the year's partition (its first write creates it): not what is counted
        pooled.partition_years.add(day.year)  # a pooled connection asks once per year; a plain one each time
        for action in (lambda c: daywrite.write_day(c, DayWrite(day, "r1", fence=WriteFenceOnly()), rows),
                       lambda c: runs.history(c, 5), lambda c: daywrite.mark_days_syncing(c, [day], "r1"),
                       lambda c: daywrite.plan_days(c, "r1", [day], [day + dt.timedelta(days=2)])):
            assert round_trips(pooled, action) <= round_trips(plain, action)  # a plain one also asks for the partition


def test_syncd_writes_into_the_dsns_search_path_through_the_pooler(bouncer, database, syncd_factory):
    """The lock_dsn inherits dsn's options (its own would win), so both see the same daily_bars."""
    _run(database, "CREATE SCHEMA other")
    daemon = syncd_factory({"database": {"dsn": _with_options(bouncer.dsn(database), "-c search_path=other"),
                                         "lock_dsn": database}})
    daemon.client().start("2025-10-09", "2025-10-10")
    assert daemon.wait_idle().last_run.status == "succeeded"
    assert query(database, "SELECT count(*) FROM other.daily_bars") == [(2 * 200,)]
    assert query(database, "SELECT to_regclass('public.daily_bars')") == [(None,)]


# --- the run lock and the start-up check -----------------------------------------------------

def test_a_transaction_pooler_lets_two_runs_take_the_session_advisory_lock(bouncer, database):
    """Why the run lock needs a real session: through the pooler the lock stays on a server connection
    that goes back to the pool (here the same one, where the lock is re-entrant), so both get it."""
    _run(database, "CREATE TABLE daily_bars (x int)")  # the lock's key derives from its oid
    first = RunLock.try_take(bouncer.dsn(database), 5)
    second = RunLock.try_take(bouncer.dsn(database), 5)
    assert first is not None and second is not None
    first.release()
    second.release()


def test_the_check_refuses_an_idle_transaction_pooler_that_hands_back_the_same_backend(bouncer_factory, database):
    bouncer = bouncer_factory(pool_size=1)
    with connection.connect(bouncer.dsn(database)) as conn, psycopg.connect(bouncer.dsn(database), autocommit=True) as lock:
        same = conn.execute("SELECT pg_backend_pid()").fetchone() == lock.execute("SELECT pg_backend_pid()").fetchone()
        assert same  # comparing backend pids could not tell this from a session
        with pytest.raises(ConfigError, match=f"database.lock_dsn {POOLER_REFUSAL}.*set database.lock_dsn to a direct"):
            check_lock_session(conn, bouncer.dsn(database), 5, lock_dsn_set=True, wait_s=1)


@pytest.mark.parametrize("pool_mode,passes", [("transaction", False), ("session", True)])
def test_the_check_under_a_busy_pooler(bouncer_factory, database, pool_mode, passes):
    bouncer = bouncer_factory(pool_mode=pool_mode, pool_size=6)
    with connection.connect(database) as conn, _busy(bouncer.dsn(database), holders=2, churners=2):
        for _ in range(3):
            if passes:
                assert check_lock_session(conn, bouncer.dsn(database), 5, lock_dsn_set=True) < 5000
            else:
                with pytest.raises(ConfigError, match=POOLER_REFUSAL):
                    check_lock_session(conn, bouncer.dsn(database), 5, lock_dsn_set=True, wait_s=1)


def test_the_check_passes_an_idle_session_mode_pooler_and_a_direct_connection(bouncer_factory, database):
    session_pooler = bouncer_factory(pool_mode="session", pool_size=2)
    with connection.connect(bouncer_factory().dsn(database)) as conn:
        assert check_lock_session(conn, session_pooler.dsn(database), 5, lock_dsn_set=True) < 5000
        assert check_lock_session(conn, database, 5, lock_dsn_set=True) < 5000


def test_the_check_refuses_a_lock_dsn_on_another_database(bouncer, database, pg_dsn):
    with connection.connect(bouncer.dsn(database)) as conn:
        with pytest.raises(ConfigError, match="database.lock_dsn reaches database 'postgres'.*but database.dsn reaches database 't_"):
            check_lock_session(conn, pg_dsn, 5, lock_dsn_set=True)


def test_the_check_refuses_a_lock_dsn_that_sees_another_daily_bars(bouncer, database):
    _run(database, "CREATE SCHEMA other", "CREATE TABLE public.daily_bars (x int)", "CREATE TABLE other.daily_bars (x int)")
    with connection.connect(bouncer.dsn(database)) as conn:
        lock_dsn = inherit_options(_with_options(database, "-c search_path=other"), bouncer.dsn(database))
        with pytest.raises(ConfigError, match="resolves daily_bars to another table"):
            check_lock_session(conn, lock_dsn, 5, lock_dsn_set=True)


def test_two_daemons_on_the_pooler_with_a_direct_lock_dsn_make_exactly_one_run_of_20_concurrent_starts(
        bouncer, database, syncd_factory):
    config = {**SLOW, "database": {"dsn": bouncer.dsn(database), "lock_dsn": database}}
    a, b = syncd_factory(config, name="a"), syncd_factory(config, name="b")
    replies: list[dict] = []
    barrier = threading.Barrier(20)

    def start(daemon) -> None:
        client = daemon.client(timeout=20)
        barrier.wait()
        replies.append(client.request({"op": "start", "start_date": LONG_RANGE[0], "end_date": LONG_RANGE[1]}))

    threads = [threading.Thread(target=start, args=(d,)) for d in (a, b) * 10]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    accepted = [r for r in replies if r["status"] == "ok"]
    assert len(accepted) == 1, replies
    assert all(r["code"] == "busy" and r["current_task"]["run_id"] == accepted[0]["run_id"]
               for r in replies if r["status"] != "ok")
    a.wait_idle(120)
    b.wait_idle(120)
    assert query(database, "SELECT run_id, status FROM sync_runs") == [(accepted[0]["run_id"], "succeeded")]


def test_without_lock_dsn_a_daemon_behind_a_transaction_pooler_refuses_to_start(bouncer, database, short_tmp):
    """Before this check, two daemons with dsn on PgBouncer accepted 2 of 20 concurrent starts, both
    wrote every day, and one daemon's orphan sweep marked the other's live run interrupted."""
    config = merge(BASE_CONFIG, {"database": {"dsn": bouncer.dsn(database)}})
    line = assert_refused(run_syncd(short_tmp, config), EX_CONFIG, "database.lock_dsn is empty", "database.dsn",
                          POOLER_REFUSAL, "set database.lock_dsn to a direct connection")
    assert "password" not in line


def test_a_lock_dsn_through_a_transaction_pooler_refuses_to_start(bouncer, database, short_tmp):
    config = merge(BASE_CONFIG, {"database": {"dsn": bouncer.dsn(database), "lock_dsn": bouncer.dsn(database)}})
    assert_refused(run_syncd(short_tmp, config), EX_CONFIG, f"database.lock_dsn {POOLER_REFUSAL}")


def test_a_lock_dsn_through_a_session_pooler_starts(bouncer_factory, database, syncd_factory):
    session_pooler = bouncer_factory(pool_mode="session", pool_size=4)
    daemon = syncd_factory({"database": {"dsn": bouncer_factory().dsn(database), "lock_dsn": session_pooler.dsn(database)}})
    daemon.client().start("2025-10-09", "2025-10-10")
    assert daemon.wait_idle().last_run.status == "succeeded"


def test_a_lock_dsn_the_server_refuses_exits_78_naming_it(database, short_tmp):
    refused = psycopg.conninfo.make_conninfo(database, user="no_such_role")
    config = merge(BASE_CONFIG, {"database": {"dsn": database, "lock_dsn": refused}})
    assert_refused(run_syncd(short_tmp, config), EX_CONFIG, "database.lock_dsn: the database refused the connection",
                   'role "no_such_role" does not exist')


def test_a_lock_dsn_with_the_embedded_database_exits_78(database, short_tmp):
    config = merge(BASE_CONFIG, {"database": {"lock_dsn": database}})
    assert_refused(run_syncd(short_tmp, config), EX_CONFIG, "database.lock_dsn: set only with database.dsn")
    assert not (short_tmp / "state" / "pgdata").exists()


# --- a DSN's options ----------------------------------------------------------------------------

@pytest.mark.parametrize("options,settings", [
    ("", {}),
    ("-c search_path=a,b", {"search_path": "a,b"}),
    ("-csearch_path=a  --statement-timeout=5s", {"search_path": "a", "statement_timeout": "5s"}),
    (r"-c application_name=my\ app -c x.y=a=b", {"application_name": "my app", "x.y": "a=b"}),
])
def test_options_are_read_as_the_server_reads_them(options, settings):
    assert parse_options(options) == settings


@pytest.mark.parametrize("options,named", [("-e", "'-e'"), ("-c search_path", "'search_path'"), ("-d 5", "'-d'"),
                                           ("search_path=x", "'search_path=x'"), ("-c", "'-c'")])
def test_options_that_are_not_settings_are_refused_naming_the_word(options, named):
    with pytest.raises(OptionsError, match=named):
        parse_options(options)


@pytest.mark.parametrize("key", ["dsn", "lock_dsn"])
def test_a_dsn_whose_options_are_not_settings_exits_78_naming_the_key(database, short_tmp, key):
    bad = _with_options(database, "-c search_path=x -F")
    config = merge(BASE_CONFIG, {"database": {"dsn": database, key: bad}})
    assert_refused(run_syncd(short_tmp, config), EX_CONFIG, f"database.{key}: options: '-F' is not a -c name=value setting")


def test_syncd_lock_dsn_in_the_environment_overrides_the_key_and_its_password_is_masked():
    from syncd.config import resolve, scrub

    config = resolve(Config(database=DatabaseConfig(lock_dsn="host=a")), Path("/"), {"SYNCD_LOCK_DSN": "host=b"})
    assert config.database.lock_dsn == "host=b"
    lock_dsn = "postgresql://syncd:s3cret-lock@db/market"
    assert scrub(f"failed for {lock_dsn}", "host=pooler", lock_dsn) == "failed for postgresql://syncd:***@db/market"
