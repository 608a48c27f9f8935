"""The run lock: one sync at a time across every daemon sharing a database, PostgreSQL as the arbiter.

A `RunLock` is a session advisory lock (`pg_try_advisory_lock`) held on a dedicated, unpooled
connection for the whole life of one run: the control loop takes it when it admits a run,
the worker gives it back when the run has been recorded finished. If the holding daemon dies,
its session ends and PostgreSQL frees the lock; any daemon that then takes it (to admit a
run, or briefly when it finds a `running` row) marks the orphaned rows `interrupted` (`Orphans`).

A holder cut off from the database loses its lock when the server drops its session (within
seconds: `connection.SESSION_KEEPALIVES`); the next holder first ends any day write of it still open
(`end_stray_writes`), so nothing of the cut-off run commits after the next run begins.

A run also loses its lock when its session is cut (PostgreSQL restarted, a network drop, an
administrator's pg_terminate_backend). `fence` is called inside each day's write transaction:
it checks that our session still holds the lock, and otherwise re-takes it on a new session,
which is only sound while the run's row is still `running` (any daemon that took the lock in
between would have marked it interrupted). If either fails the run stops with `RunLockLost`
before writing. The fence first takes a second, transaction-scoped advisory lock, so day writes are
serialised: a write that passed the check just before its lock session was cut ends before
the next run's first write begins, and every later write of the old run fails the check.
Two runs never write at once.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from ..logs import Event, get_logger
from ..record import RunRecord
from . import connection, daywrite, runs
from .sqlrow import one, scalar

# Advisory lock keys derived from the target table: (space << 32) | oid of daily_bars, so daemons
# writing the same daily_bars exclude each other and ones writing another schema's do not.
RUN_LOCK_SPACE = 0x53594E43  # "SYNC": one sync at a time on this daily_bars, across every daemon


WRITE_FENCE_SPACE = 0x53594E46  # held by each day's write transaction: one day write at a time


_TARGET_OID = "'daily_bars'::regclass::oid"


_RUN_LOCK_KEY = f"(({RUN_LOCK_SPACE}::bigint << 32) | {_TARGET_OID}::bigint)"


_WRITE_FENCE_KEY = f"(({WRITE_FENCE_SPACE}::bigint << 32) | {_TARGET_OID}::bigint)"


def try_run_lock(conn: psycopg.Connection[Any]) -> bool:
    return bool(scalar(conn.execute(f"SELECT pg_try_advisory_lock({_RUN_LOCK_KEY})")))


def release_run_lock(conn: psycopg.Connection[Any]) -> None:
    conn.execute(f"SELECT pg_advisory_unlock({_RUN_LOCK_KEY})")


# pg_locks shows a bigint advisory key as classid (high 32 bits), objid (low 32 bits), objsubid 1.
def _advisory_lock_row(space: int) -> str:
    return ("l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database()) "
            f"AND l.classid = {space} AND l.objid = {_TARGET_OID}")


_RUN_LOCK_ROW = _advisory_lock_row(RUN_LOCK_SPACE)


SessionId = tuple[int, dt.datetime]  # (backend pid, backend start): a pid alone may be reused after a restart


def session_id(conn: psycopg.Connection[Any]) -> SessionId:
    row = one(conn.execute("SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"))
    return (row[0], row[1])


def try_write_fence(conn: psycopg.Connection[Any]) -> bool:
    """In a transaction: take the day-write fence if no day write holds it now (verify checking a day)."""
    return bool(scalar(conn.execute(f"SELECT pg_try_advisory_xact_lock({_WRITE_FENCE_KEY})")))


HOLD_WRITE_FENCE = f"SELECT pg_advisory_xact_lock({_WRITE_FENCE_KEY})"


def hold_write_fence(conn: psycopg.Connection[Any]) -> None:
    """In a day's write transaction: no other day write (of a later run) can begin until this one has ended."""
    conn.execute(HOLD_WRITE_FENCE)


# A session's start by its pid, NULL where the role may not see it: pg_stat_get_activity(pid), the function the
# pg_stat_activity view reads, asked for the one backend (the view itself costs ~1 ms to parse and plan, its
# joins included, in a statement that runs twice a day write).
def _backend_start(pid: str) -> str:
    return f"(SELECT a.backend_start FROM pg_stat_get_activity({pid}) a)"


def fence_probe(session: SessionId) -> daywrite.FenceProbe:
    held = (f"EXISTS (SELECT 1 FROM pg_locks l WHERE {_RUN_LOCK_ROW} AND l.pid = %s "
            f"AND {_backend_start('l.pid')} IS NOT DISTINCT FROM %s::timestamptz)")
    return daywrite.FenceProbe(HOLD_WRITE_FENCE, held, session)


_WRITE_FENCE_ROW = _advisory_lock_row(WRITE_FENCE_SPACE)


STRAY_WRITE_WAIT_MS = 3000  # within the lock session's statement_timeout


def end_stray_writes(conn: psycopg.Connection[Any]) -> list[int]:
    """Call holding the run lock. A write transaction still holding the write fence then belongs to a run
    that lost the lock: typically a host cut off mid-write, whose server session lingers until TCP gives
    up on it, and could still commit if its link came back. End it (pg_terminate_backend, waiting for
    the session to exit), so no write of an earlier run commits after the caller's run began.
    Returns the ended sessions' pids. Raises InsufficientPrivilege when the role may not end them."""
    rows = conn.execute(f"SELECT l.pid, pg_terminate_backend(l.pid, {STRAY_WRITE_WAIT_MS}) FROM pg_locks l "
                        f"WHERE {_WRITE_FENCE_ROW} AND l.pid <> pg_backend_pid()").fetchall()
    return [pid for pid, _ in rows]


def run_lock_holder(conn: psycopg.Connection[Any]) -> SessionId | None:
    """The session holding the run lock, if any (its backend_start is NULL to a role that may not see it)."""
    row = conn.execute(f"SELECT l.pid, {_backend_start('l.pid')} FROM pg_locks l WHERE {_RUN_LOCK_ROW}").fetchone()
    return (row[0], row[1]) if row else None


def run_lock_holder_name(conn: psycopg.Connection[Any]) -> str | None:
    """The application_name of the session holding the run lock (syncd-lock pid=N host=H), if any."""
    row = conn.execute(f"SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                       f"WHERE {_RUN_LOCK_ROW}").fetchone()
    return row[0] if row else None


class RunLockLost(Exception):
    """This run no longer holds the run lock and cannot safely take it back."""


class RunLock:
    """The advisory lock of one run, on its own connection. Not thread-safe: one owner at a time."""

    def __init__(self, dsn: str, connect_timeout_s: float) -> None:
        self._dsn = dsn
        self._timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self.session: SessionId | None = None

    @classmethod
    def try_take(cls, dsn: str, connect_timeout_s: float) -> RunLock | None:
        """The lock on a new session, or None when another session holds it."""
        lock = cls(dsn, connect_timeout_s)
        return lock if lock._take() else None

    @property
    def conn(self) -> psycopg.Connection[Any]:
        assert self._conn is not None, "the run lock is not held"
        return self._conn

    def _take(self) -> bool:
        self.release()
        conn = connection.connect(self._dsn, self._timeout_s, application_name=LockHolder.me().application_name(),
                             session=True, statement_timeout="5000", **connection.SESSION_KEEPALIVES)
        try:
            taken = try_run_lock(conn)
        except BaseException:
            conn.close()
            raise
        if not taken:
            conn.close()
            return False
        try:
            self.session = session_id(conn)
        except BaseException:
            conn.close()  # the session's end frees the lock
            raise
        self._conn = conn
        return True

    def fence(self, write_conn: psycopg.Connection[Any], run_id: str) -> None:
        """Raise RunLockLost unless this run (still, or again) holds the lock. Called in each day's write."""
        hold_write_fence(write_conn)
        if self._conn is not None and run_lock_holder(write_conn) == self.session:
            return
        if not self._take():
            raise RunLockLost("the run lock was lost (its database session ended) and another daemon holds it now")
        if runs.run_status(self.conn, run_id) != "running":
            self.release()
            raise RunLockLost("the run lock was lost (its database session ended) and another daemon took over meanwhile")
        get_logger(run_id=run_id).warning(Event.RUN_LOCK_RETAKEN, reason="the run lock's database session had ended")

    def fence_probe(self) -> daywrite.FenceProbe | None:
        """`fence`'s check as SQL for a write's first round trip (None while no session holds the lock)."""
        return fence_probe(self.session) if self._conn is not None and self.session is not None else None

    def end_stray_writes(self) -> None:
        """Holding the lock: end day writes still open from a run that lost it (end_stray_writes), so
        none of them commits after this holder's run begins. Without the privilege to end them, the
        write fence still keeps them from overlapping this run's writes: logged, not raised."""
        try:
            ended = end_stray_writes(self.conn)
        except psycopg.errors.InsufficientPrivilege as exc:
            get_logger().warning(Event.STRAY_WRITE_NOT_ENDED, error=str(exc).strip(),
                                 hint="grant the daemons' role pg_signal_backend, or use one role for every daemon")
            return
        for pid in ended:
            get_logger().warning(Event.STRAY_WRITE_ENDED, backend_pid=pid,
                                 reason="a day write of a run that lost the run lock was still open")

    def release(self) -> None:
        """Give the lock back (closing the session frees it even if the unlock cannot be sent)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if not conn.broken:
                release_run_lock(conn)
        except psycopg.Error:
            pass
        finally:
            conn.close()


class RunFence:
    """`RunLock.fence` for one run, as the write path calls it: `fence(conn)` is the full check, and
    `probe()` the same check as SQL that can share a pipeline with a day's first statements (None
    when the lock holds no session to compare with: then the full check runs)."""

    def __init__(self, lock: RunLock, run_id: str) -> None:
        self.lock = lock
        self.run_id = run_id

    def __call__(self, write_conn: psycopg.Connection[Any]) -> None:
        self.lock.fence(write_conn, self.run_id)

    def probe(self) -> daywrite.FenceProbe | None:
        return self.lock.fence_probe()


# Who found the orphans, as `run_interrupted` logs it (operators grep these values).
FoundBy = Literal["start-up", "run_lock", "history", "days", "idle check"]


class Orphans:
    """Orphan recovery, the one way for every finder: the daemon at start-up, admission under the run lock
    it just took, `history` and `days` when they read a `running` run or a `syncing` day that is not
    the daemon's own, the worker's idle check. If the run lock is free no run is alive anywhere, so
    runs left `running` are orphans: `recover` marks them interrupted (their `syncing` days failed),
    logs each (`run_interrupted` with `found_by`) and hands them, as recorded, to `notify` (the alerts)."""

    def __init__(self, lock_dsn: str, connect_timeout_s: float,
                 notify: Callable[[Sequence[RunRecord]], None] | None = None) -> None:
        self.lock_dsn = lock_dsn
        self.connect_timeout_s = connect_timeout_s
        self.notify = notify

    def recover(self, found_by: FoundBy, lock: RunLock | None = None) -> list[str] | None:
        """The orphans' run ids, marked. Under `lock` when the caller holds the run lock; else it is taken for
        the sweep and given back, and None when a live run holds it (here or on another host)."""
        taken = None
        if lock is None:
            lock = taken = RunLock.try_take(self.lock_dsn, self.connect_timeout_s)
            if lock is None:
                return None
        try:
            lock.end_stray_writes()
            recovered = runs.mark_orphans(lock.conn)
            interrupted = runs.runs_by_id(lock.conn, recovered) if recovered and self.notify else []
        finally:
            if taken is not None:
                taken.release()
        for run_id in recovered:
            get_logger(run_id=run_id).warning(Event.RUN_INTERRUPTED, found_by=found_by)
        if interrupted and self.notify is not None:
            self.notify(interrupted)
        return recovered


@dataclass(frozen=True)
class LockHolder:
    """Who holds the run lock, as every daemon sees it: the lock session's application_name in
    pg_stat_activity, `syncd-lock pid=N host=H` (written by `application_name`, read by `parse`)."""

    pid: int | None
    host: str | None

    PREFIX = "syncd-lock"

    @classmethod
    def me(cls) -> LockHolder:
        return cls(pid=os.getpid(), host=socket.gethostname())

    def application_name(self) -> str:
        return f"{self.PREFIX} pid={self.pid} host={self.host}"[:63]  # PostgreSQL keeps 63 bytes

    @classmethod
    def parse(cls, application_name: str | None) -> LockHolder:
        words = (application_name or "").split()
        fields = dict(word.split("=", 1) for word in words[1:] if "=" in word) if words[:1] == [cls.PREFIX] else {}
        pid = fields.get("pid", "")
        return cls(pid=int(pid) if pid.isdigit() else None, host=fields.get("host"))
