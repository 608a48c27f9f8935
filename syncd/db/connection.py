"""Connections that work through a transaction pooler (PgBouncer in transaction mode, managed poolers).

A transaction pooler gives a client a server connection for one transaction at a time, so
nothing may rely on session state, and many poolers refuse a startup `options` parameter
outright (PgBouncer: "unsupported startup parameter: options"; Neon's pooler too) or drop it.
This module owns the way syncd connects so that none of that matters:

- no startup `options` at all: the settings a DSN's `options` carries (`-c name=value`,
  `--name=value`; else $PGOPTIONS, as libpq would) and syncd's own (statement_timeout,
  TimeZone...) are applied by syncd itself;
- on a pooled connection (`PoolSafeConnection`) they are applied inside every transaction
  with `set_config(name, value, true)` (SET LOCAL), sent in one pipeline with the BEGIN, so a
  transaction costs no extra round trip; a statement outside a transaction runs in its own
  short transaction that starts with them, BEGIN, settings, statement and COMMIT in one
  pipeline (still one round trip);
- no server-side prepared statements (`prepare_threshold=None`): a pooler that does not track
  them (PgBouncer before 1.21) would run them on a server connection that never saw them,
  or collide with another client's (`prepared statement "_pg3_0" already exists`);
- a session connection (the run lock's own, checked to be one real session at start: see
  poolercheck.py) gets the settings once, for the session.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import psycopg
import psycopg.sql
from psycopg import pq
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.$-]*")


class OptionsError(ValueError):
    """A DSN's `options` holds something other than `-c name=value` settings."""


def parse_options(options: str) -> dict[str, str]:
    """The `-c name=value` / `--name=value` settings of a libpq `options` string, in order.

    Words are split on whitespace, a backslash escaping the next character, as the server does.
    Any other command-line switch raises OptionsError naming it.
    """
    words = _split_words(options)
    settings: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-c" and i + 1 < len(words):
            pair, i = words[i + 1], i + 2
        elif word.startswith("-c") and len(word) > 2:
            pair, i = word[2:], i + 1
        elif word.startswith("--") and len(word) > 2:
            pair, i = word[2:], i + 1
        else:
            raise OptionsError(f"options: {word!r} is not a -c name=value setting (syncd applies the DSN's "
                               "options itself, inside each transaction, and understands only -c name=value)")
        name, sep, value = pair.partition("=")
        name = name.replace("-", "_")  # as the server reads it
        if not sep or not _SETTING_NAME.fullmatch(name):
            raise OptionsError(f"options: {pair!r} is not a name=value setting")
        settings[name] = value
    return settings


def _split_words(text: str) -> list[str]:
    words: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return words


def dsn_settings(dsn: str) -> dict[str, str]:
    """The settings of the DSN's `options` (or of $PGOPTIONS when the DSN has none, as libpq does)."""
    options = psycopg.conninfo.conninfo_to_dict(dsn).get("options")
    if options is None:
        options = os.environ.get("PGOPTIONS", "")
    return parse_options(str(options))


def inherit_options(dsn: str, from_dsn: str) -> str:
    """`dsn` whose options also carry `from_dsn`'s settings (its own win): the run lock's connection
    sees the same search_path as the others without repeating it in lock_dsn."""
    return _with_settings(dsn, {**dsn_settings(from_dsn), **dsn_settings(dsn)})


def in_schema(dsn: str, schema: str) -> str:
    """`dsn` whose settings put `schema` alone on the search_path (database.schema): applied inside each
    transaction like the DSN's own options, so unqualified names (daily_bars, the run lock's
    'daily_bars'::regclass) resolve there, through a transaction pooler too."""
    return _with_settings(dsn, {**dsn_settings(dsn), "search_path": schema})


def _with_settings(dsn: str, settings: Mapping[str, str]) -> str:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info["options"] = " ".join(f"-c {name}={_escape(value)}" for name, value in settings.items())
    return psycopg.conninfo.make_conninfo("", **info)


def _escape(value: str) -> str:
    return re.sub(r"([\\\s])", r"\\\1", value)


def _open(dsn: str, timeout_s: float, application_name: str, settings: Mapping[str, str], *,
          session: bool = False, libpq: Mapping[str, str] | None = None) -> psycopg.Connection[Any]:
    """An autocommit connection with no startup options and no server-side prepared statements.

    `settings` (added to the DSN's own, and winning over them) apply to every statement: inside
    each transaction on a pooled connection, or once for the session when `session` is true.
    `libpq`: more connection parameters for libpq itself (client keepalives), never sent to the server.
    """
    merged = {**dsn_settings(dsn), **settings}
    common: dict[str, Any] = dict(autocommit=True, prepare_threshold=None, connect_timeout=max(1, int(timeout_s)),
                                  application_name=application_name, options="",  # "": not even $PGOPTIONS
                                  **(libpq or {}))
    if session:
        merged.pop("application_name", None)  # the run lock's session is named by syncd (runlock.LockHolder)
        conn = psycopg.Connection.connect(dsn, **common)
        try:
            if merged:
                conn.execute(*_set_config(merged, local=False))
        except BaseException:
            conn.close()
            raise
        return conn
    pooled = PoolSafeConnection.connect(dsn, cursor_factory=PoolSafeCursor, **common)
    pooled.local_settings = _set_config(merged, local=True) if merged else None
    pooled.settings = merged
    pooled.partition_years = set()
    return pooled


# Server side, on the run lock's session: the server drops the session of a host that vanished
# (cut off, powered off) 3-6 s after the last packet it got from it, instead of the kernel's two
# hours: probes after 2 s idle, then every 1 s; tcp_user_timeout bounds a reply it cannot deliver
# (and, once probing, when the session is dropped). Its run lock frees then, and a standby's start
# is admitted (docs/operations.md, "Active/standby"). Ignored on unix sockets.
SESSION_KEEPALIVES = {"tcp_keepalives_idle": "2", "tcp_keepalives_interval": "1", "tcp_keepalives_count": "3",
                      "tcp_user_timeout": "5000"}


# Client side, libpq's own parameters on every connection (unless the DSN sets them): a statement
# on a connection whose server is unreachable fails within ~6 s instead of waiting ~15 min for
# TCP to give up. A slow statement is not affected (the server's kernel keeps answering).
CLIENT_KEEPALIVES = {"keepalives": "1", "keepalives_idle": "2", "keepalives_interval": "1", "keepalives_count": "3",
                     "tcp_user_timeout": "5000"}


def connect(dsn: str, timeout_s: float = 10.0, application_name: str = "syncd", *, session: bool = False,
            **settings: str) -> psycopg.Connection[Any]:
    """An autocommit connection that works through a transaction pooler (PoolSafeConnection): `settings`
    (statement_timeout...) and the DSN's own `options` (a search_path...) hold for every statement,
    applied inside each transaction; `session=True` (the run lock's connection) sets them once.
    libpq's keepalives (CLIENT_KEEPALIVES) are connection parameters, unless the DSN sets them."""
    return _open(dsn, timeout_s, application_name, settings, session=session, libpq=client_keepalives(dsn))


def client_keepalives(dsn: str) -> dict[str, str]:
    """CLIENT_KEEPALIVES, less any the DSN sets itself (an operator's own choice wins)."""
    own = psycopg.conninfo.conninfo_to_dict(dsn)
    return {key: value for key, value in CLIENT_KEEPALIVES.items() if key not in own}


def _as_text(query: Any, conn: psycopg.Connection[Any]) -> str:
    """A query as the text the server gets (a psycopg.sql object rendered, bytes decoded)."""
    if isinstance(query, psycopg.sql.Composable):
        return query.as_string(conn)
    return query.decode() if isinstance(query, bytes) else str(query)


def _set_config(settings: Mapping[str, str], *, local: bool) -> tuple[str, list[str]]:
    """One statement setting them all (set_config takes its name and value as parameters: no quoting)."""
    calls = ", ".join(f"set_config(%s, %s, {'true' if local else 'false'})" for _ in settings)
    return f"SELECT {calls}", [part for item in settings.items() for part in item]


class PoolSafeConnection(psycopg.Connection[Any]):
    """A connection whose settings hold in every transaction, through a transaction pooler."""

    local_settings: tuple[str, list[str]] | None = None
    settings: Mapping[str, str] = {}  # what local_settings sets (the DSN's options and syncd's own)
    partition_years: set[int]  # daily_bars' yearly partitions known to exist (daywrite.py asks once per year)
    _quoting: psycopg.ClientCursor[Any] | None = None
    _settings_sql: str | None = None

    @contextlib.contextmanager
    def transaction(self, savepoint_name: str | None = None, force_rollback: bool = False) -> Iterator[psycopg.Transaction]:
        if not self.needs_settings():
            with super().transaction(savepoint_name, force_rollback) as tx:
                yield tx
            return
        assert self.local_settings is not None
        with contextlib.ExitStack() as stack:
            # BEGIN and the settings leave in one pipeline: one round trip, as a bare BEGIN would take.
            with self.pipeline() if psycopg.Pipeline.is_supported() else contextlib.nullcontext():
                tx = stack.enter_context(psycopg.Transaction(self, savepoint_name, force_rollback))
                psycopg.Cursor(self).execute(*self.local_settings)
            yield tx

    def quoting(self) -> psycopg.ClientCursor[Any]:
        """A cursor that binds parameters on the client (its mogrify), kept for the connection's life."""
        if self._quoting is None:
            self._quoting = psycopg.ClientCursor(self)
        return self._quoting

    def settings_statement(self) -> str:
        """local_settings as one statement with its values bound (rendered once)."""
        if self._settings_sql is None:
            assert self.local_settings is not None
            self._settings_sql = self.quoting().mogrify(*self.local_settings)
        return self._settings_sql

    def needs_settings(self) -> bool:
        """True outside a transaction (a statement must then start one with the settings)."""
        return self.local_settings is not None and self.info.transaction_status == TransactionStatus.IDLE

    def in_short_transaction(self, send: Callable[[], object]) -> None:
        """`send` the statement(s) inside BEGIN, the settings and COMMIT, all in one pipeline (one round trip)."""
        assert self.local_settings is not None
        if not psycopg.Pipeline.is_supported():
            with self.transaction():
                send()
            return
        try:
            with self.pipeline():
                raw = psycopg.Cursor(self)
                raw.execute("BEGIN")
                raw.execute(*self.local_settings)
                send()
                raw.execute("COMMIT")
        except BaseException:
            if not self.broken and self.info.transaction_status != TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    self.rollback()  # the statement failed: the pipeline skipped the COMMIT
            raise


class PoolSafeCursor(psycopg.Cursor[Any]):
    """A cursor whose statements outside a transaction run in a short one that starts with the settings."""

    def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool | None = None) -> Any:
        conn = self._pool_safe_connection()
        if not conn.needs_settings():
            return super().execute(query, params, prepare=prepare, binary=binary)
        if binary or conn.pgconn.pipeline_status != pq.PipelineStatus.OFF:
            conn.in_short_transaction(lambda: super(PoolSafeCursor, self).execute(query, params, prepare=prepare, binary=binary))
            return self
        return self._in_one_query(conn, query, params)

    def _in_one_query(self, conn: PoolSafeConnection, query: Any, params: Any) -> Any:
        """BEGIN, the settings, the statement and COMMIT as one simple-protocol query, bound on the client
        (psycopg's own literal quoting, as ClientCursor does): one message each way. The pipeline above
        does the same in one round trip too, but its four results cost ~5x the time in psycopg, which the
        control loop pays on every `history` and `days` (bench/control.py)."""
        quote = conn.quoting()
        statement = quote.mogrify(query, params) if params is not None else _as_text(query, conn)
        try:
            super().execute(f"BEGIN; {conn.settings_statement()}; {statement}; COMMIT")
        except BaseException:
            if not conn.broken and conn.info.transaction_status != TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()  # the statement failed: the server skipped the rest, COMMIT included
            raise
        self.nextset()  # past BEGIN
        self.nextset()  # past the settings: the statement's own result, as execute() would leave it
        return self

    def executemany(self, query: Any, params_seq: Any, *, returning: bool = False) -> None:
        conn = self._pool_safe_connection()
        if not conn.needs_settings():
            return super().executemany(query, params_seq, returning=returning)
        conn.in_short_transaction(lambda: super(PoolSafeCursor, self).executemany(query, params_seq, returning=returning))
        return None

    @contextlib.contextmanager
    def copy(self, statement: Any, params: Any = None, *, writer: Any = None) -> Iterator[Any]:
        conn = self._pool_safe_connection()  # COPY cannot ride a pipeline: a transaction around it
        with conn.transaction() if conn.needs_settings() else contextlib.nullcontext():
            with super().copy(statement, params, writer=writer) as copy:
                yield copy

    def _pool_safe_connection(self) -> PoolSafeConnection:
        conn = self.connection
        assert isinstance(conn, PoolSafeConnection)
        return conn


def read_together(conn: psycopg.Connection[Any], statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[dict[str, Any]]]:
    """Several read-only statements in one round trip, each one's rows as dicts, in order.

    They leave as one simple-protocol query, bound on the client (psycopg's own literal quoting, as
    PoolSafeCursor's single statements are); on a PoolSafeConnection outside a transaction, inside
    BEGIN, the settings and COMMIT, so they hold through a transaction pooler. One failing statement
    fails them all (the server skips the rest) and the transaction is rolled back."""
    quote: psycopg.ClientCursor[Any]
    if isinstance(conn, PoolSafeConnection):
        quote, opening = conn.quoting(), (["BEGIN", conn.settings_statement()] if conn.needs_settings() else [])
    else:
        quote, opening = psycopg.ClientCursor(conn), []
    bound = [quote.mogrify(sql, params) for sql, params in statements]
    text = "; ".join([*opening, *bound, *(["COMMIT"] if opening else [])])
    results: list[list[dict[str, Any]]] = []
    with psycopg.Cursor(conn, row_factory=dict_row) as cur:  # never a PoolSafeCursor: this text has its own BEGIN
        try:
            cur.execute(text)
        except BaseException:
            if not conn.broken and conn.info.transaction_status != TransactionStatus.IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()  # a statement failed: the server skipped the rest, COMMIT included
            raise
        for _ in opening:
            cur.nextset()
        for _ in bound:
            results.append(cur.fetchall())
            cur.nextset()
    return results


class BatchedTransaction:
    """A transaction driven by hand on an autocommit connection, so that its statements can share round trips.

    `begin()` sends BEGIN and the settings (the connection's own, then `extra`, all SET LOCAL in one
    statement) and `commit()` sends COMMIT, each where the caller is: inside `conn.pipeline()`
    they leave with the statements around them (one round trip for BEGIN, settings and the first
    statements; one for the last statements and COMMIT), which psycopg's own `transaction()` cannot
    do. Leaving the `with` block by an exception, or without `commit()`, rolls back.
    """

    def __init__(self, conn: psycopg.Connection[Any], extra: Mapping[str, str] | None = None) -> None:
        if not conn.autocommit or conn.info.transaction_status != TransactionStatus.IDLE:
            raise RuntimeError("BatchedTransaction needs an autocommit connection outside any transaction")
        self.conn = conn
        self._raw = psycopg.Cursor(conn)  # never a PoolSafeCursor: these statements are the transaction's own
        own = conn.settings if isinstance(conn, PoolSafeConnection) else {}
        merged = {**own, **(extra or {})}
        self._settings = _set_config(merged, local=True) if merged else None
        self._committed = False

    def __enter__(self) -> BatchedTransaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None and self._committed:
            return
        conn = self.conn
        if not conn.broken and conn.info.transaction_status != TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                conn.rollback()

    def begin(self) -> None:
        self._raw.execute("BEGIN")
        if self._settings is not None:
            self._raw.execute(*self._settings)

    def commit(self) -> None:
        self._raw.execute("COMMIT")
        self._committed = True
