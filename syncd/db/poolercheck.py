"""The start-up check that the run lock's connection is one real session, in the database syncd writes.

The run lock is a session advisory lock: it holds only while one server session lives for the
whole run. Behind a transaction pooler (PgBouncer `pool_mode = transaction`, most managed
poolers) a client connection is linked to a server connection for one transaction at a time:
the lock stays behind on a server connection that goes back to the pool, where another client
re-takes it or finds it free, and two runs both get it. Comparing backend pids cannot tell,
since an idle pool hands the same server connection back. This check can: the lock connection
LISTENs on a fresh channel, a connection on `dsn` NOTIFYs it, and the notification must
reach the lock connection while it sits idle. A real session (direct, a session-mode pooler, a
TCP proxy) receives it at once; behind a transaction pooler the listening server connection
is unlinked from the idle client, so the notification goes to whichever client that server
connection serves next (or to the notifier itself), never to the lock connection. NOTIFY is
per database, so its arrival also proves both DSNs reach the same database of the same server;
their identities (server, database, the daily_bars the lock's key derives from) are compared
first, for a message that says which differs.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from ..config import ConfigError
from . import connection

NOTIFY_WAIT_S = 5.0  # a real session gets the notification within milliseconds
LOCK_KEY = "database.lock_dsn"
_FIX = "set database.lock_dsn to a direct connection (or one through a session-mode pooler) to the same database"


class LockConnectFailed(Exception):
    """The run lock's own DSN could not be connected to (the process edge names lock_dsn, not dsn)."""

    def __init__(self, dsn: str, cause: psycopg.OperationalError) -> None:
        super().__init__(str(cause))
        self.key = LOCK_KEY
        self.dsn = dsn
        self.cause = cause


@dataclass(frozen=True)
class DatabaseIdentity:
    system_identifier: int | None  # None where pg_control_system() is not granted
    server_started: dt.datetime    # pg_postmaster_start_time(): tells servers apart where the identifier is hidden
    database: str
    database_oid: int
    daily_bars: int | None         # the table the run lock's key derives from (None before the first migration)

    def same_server(self, other: DatabaseIdentity) -> bool:
        known = self.system_identifier is not None and other.system_identifier is not None
        return self.server_started == other.server_started and (not known or self.system_identifier == other.system_identifier)

    def describe(self) -> str:
        server = f"system {self.system_identifier}" if self.system_identifier is not None else "server"
        return f"database {self.database!r} on {server} started {self.server_started.isoformat()}"


def identity(conn: psycopg.Connection[Any]) -> DatabaseIdentity:
    row = conn.execute(
        "SELECT CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE') "
        "THEN (SELECT system_identifier FROM pg_control_system()) END, pg_postmaster_start_time(), "
        "current_database(), (SELECT oid FROM pg_database WHERE datname = current_database()), "
        "to_regclass('daily_bars')::oid").fetchone()
    assert row is not None  # a SELECT without FROM returns its one row
    return DatabaseIdentity(*row)


def check_lock_session(conn: psycopg.Connection[Any], lock_dsn: str, timeout_s: float, *, lock_dsn_set: bool,
                       wait_s: float = NOTIFY_WAIT_S) -> float:
    """Raise ConfigError (exit 78, naming database.lock_dsn) unless `lock_dsn` opens one real session in
    the database of `conn` (a connection on database.dsn); return how long the notification took, in ms."""
    subject = LOCK_KEY if lock_dsn_set else f"{LOCK_KEY} is empty, so the run lock uses database.dsn, which"
    try:
        lock = connection.connect(lock_dsn, timeout_s, application_name="syncd session check", session=True)
    except psycopg.OperationalError as exc:
        raise LockConnectFailed(lock_dsn, exc) from None
    with lock:
        _check_same_database(identity(conn), identity(lock), subject)
        channel, token = f"syncd_session_check_{secrets.token_hex(8)}", secrets.token_hex(8)
        lock.execute(f"LISTEN {channel}")
        started = time.monotonic()
        conn.execute("SELECT pg_notify(%s, %s)", (channel, token))
        arrived = any(n.channel == channel and n.payload == token for n in lock.notifies(timeout=wait_s, stop_after=1))
        waited_ms = (time.monotonic() - started) * 1000
        if not arrived:
            raise ConfigError(
                f"{subject} reaches PostgreSQL through a transaction pooler: a notification sent to its session "
                f"did not arrive within {wait_s:g} s (such a pooler hands the server connection to other clients "
                f"between transactions, so the run lock would not hold and two runs could start); {_FIX}")
        lock.execute(f"UNLISTEN {channel}")
    return waited_ms


def _check_same_database(main: DatabaseIdentity, lock: DatabaseIdentity, subject: str) -> None:
    if not main.same_server(lock) or (main.database_oid, main.database) != (lock.database_oid, lock.database):
        raise ConfigError(f"{subject} reaches {lock.describe()}, but database.dsn reaches {main.describe()}: "
                          "the run lock must live in the database syncd writes; point database.lock_dsn at it")
    if main.daily_bars != lock.daily_bars:
        raise ConfigError(f"{subject} resolves daily_bars to another table than database.dsn does (a different "
                          "search_path in its options?): the run lock's key derives from that table; give both the same")
