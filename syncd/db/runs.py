"""Run records (`sync_runs`): a run's row from insert to finish, orphans, and the reads behind `history`.

One row a run, written by the control loop (insert) and the worker (counters, finish); any daemon
(or person) sharing the database reads the truth here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ..record import RunRecord
from . import daywrite
from .sqlrow import scalar


def insert_run(conn: psycopg.Connection[Any], run: RunRecord) -> dt.datetime:
    """Record a new run as running; its started_at is the database's clock (as every finished_at is), returned."""
    return scalar(conn.execute(
        "INSERT INTO sync_runs (run_id, task_type, requested_by, request_id, status, start_date, end_date, total_days, "
        "trading_days, started_at, host, pid) VALUES (%s, %s, %s, %s, 'running', %s, %s, %s, %s, now(), %s, %s) "
        "RETURNING started_at",
        (run.run_id, run.task_type, run.requested_by, run.request_id, run.start_date, run.end_date, run.total_days,
         run.trading_days, run.host, run.pid)))


def finish_run(conn: psycopg.Connection[Any], run_id: str, status: str, error: str | None) -> RunRecord | None:
    """Record a run's end. A row leaves `running` once: one already marked (interrupted) stays as it is."""
    runs = _fetch_runs(conn, "UPDATE sync_runs SET status = %s, error = %s, finished_at = now() "
                             "WHERE run_id = %s AND status = 'running' RETURNING *", (status, error, run_id))
    return runs[0] if runs else next(iter(_fetch_runs(conn, "SELECT * FROM sync_runs WHERE run_id = %s", (run_id,))), None)


def mark_orphans(conn: psycopg.Connection[Any]) -> list[str]:
    """Runs left `running` become interrupted and their syncing days failed. Call only holding the run lock
    (runlock.Orphans, which also logs and notifies): then no run is alive anywhere, so a `running` row
    belongs to a daemon that died under it."""
    with conn.transaction():
        dead = [r[0] for r in conn.execute(
            "UPDATE sync_runs SET status = 'interrupted', finished_at = now(), "
            "error = 'the daemon stopped during the run (killed, crashed or cut off from the database)' "
            "WHERE status = 'running' RETURNING run_id").fetchall()]
        if dead:
            daywrite.fail_interrupted_days(conn, dead)
    return dead


def run_status(conn: psycopg.Connection[Any], run_id: str) -> str | None:
    row = conn.execute("SELECT status FROM sync_runs WHERE run_id = %s", (run_id,)).fetchone()
    return row[0] if row else None


def set_trading_days(conn: psycopg.Connection[Any], run_id: str, trading_days: int) -> None:
    conn.execute("UPDATE sync_runs SET trading_days = %s WHERE run_id = %s", (trading_days, run_id))


def running_run(conn: psycopg.Connection[Any]) -> RunRecord | None:
    """The newest run recorded as running (the holder of the run lock, possibly on another host)."""
    runs = _fetch_runs(conn, "SELECT * FROM sync_runs WHERE status = 'running' ORDER BY seq DESC LIMIT 1", ())
    return runs[0] if runs else None


HISTORY_SQL = "SELECT * FROM sync_runs ORDER BY seq DESC LIMIT %s"  # (limit,): the newest runs first


def history(conn: psycopg.Connection[Any], limit: int) -> list[RunRecord]:
    return _fetch_runs(conn, HISTORY_SQL, (limit,))


def runs_from_rows(rows: Sequence[dict[str, Any]]) -> list[RunRecord]:
    """RunRecords from sync_runs rows read as dicts (HISTORY_SQL's, read elsewhere)."""
    return [_run_from_row(r) for r in rows]


def last_scheduled_run(conn: psycopg.Connection[Any], task_types: Sequence[str]) -> RunRecord | None:
    """The newest run of the built-in schedule (any status)."""
    runs = _fetch_runs(conn, "SELECT * FROM sync_runs WHERE task_type = ANY(%s) ORDER BY seq DESC LIMIT 1", (list(task_types),))
    return runs[0] if runs else None


def last_success_times(conn: psycopg.Connection[Any]) -> dict[str, dt.datetime]:
    """task_type -> when its newest `succeeded` run finished."""
    return dict(conn.execute("SELECT task_type, max(finished_at) FROM sync_runs WHERE status = 'succeeded' "
                             "AND finished_at IS NOT NULL GROUP BY task_type").fetchall())


def runs_by_id(conn: psycopg.Connection[Any], run_ids: Sequence[str]) -> list[RunRecord]:
    return _fetch_runs(conn, "SELECT * FROM sync_runs WHERE run_id = ANY(%s) ORDER BY seq", (list(run_ids),))


def _fetch_runs(conn: psycopg.Connection[Any], sql: str, params: tuple[Any, ...]) -> list[RunRecord]:
    with conn.cursor(row_factory=dict_row) as cur:
        return runs_from_rows(cur.execute(sql, params).fetchall())


def _run_from_row(r: dict[str, Any]) -> RunRecord:
    return RunRecord(
        run_id=r["run_id"], task_type=r["task_type"], requested_by=r["requested_by"], request_id=r["request_id"],
        status=r["status"], start_date=r["start_date"], end_date=r["end_date"], trading_days=r["trading_days"],
        days_done=r["days_done"], days_failed=r["days_failed"], rows=r["rows"], started_at=r["started_at"],
        finished_at=r["finished_at"], error=r["error"], host=r["host"], pid=r["pid"])
