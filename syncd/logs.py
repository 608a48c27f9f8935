"""structlog set-up for syncd: JSON lines under systemd or a pipe, console rendering on a TTY.

This module owns how log events look (README.md and docs/operations.md, "Logs"): every line carries `event`,
`level` and an ISO UTC `timestamp`; run-scoped events also carry `run_id`/`task_type`, bound
explicitly by the caller (context variables do not follow into the worker thread). It does
not decide what is logged.
"""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from typing import TextIO

import structlog


class Event(StrEnum):
    """Every event name syncd logs. The first group is the contract operators grep for."""

    SYNC_LOCK_ACQUIRED = "sync_lock_acquired"
    SYNC_LOCK_RELEASED = "sync_lock_released"
    SYNC_REJECTED = "sync_rejected"
    SCHEDULE_FIRED = "schedule_fired"
    SCHEDULE_SKIPPED_BUSY = "schedule_skipped_busy"
    DAY_SYNCED = "day_synced"
    DAY_FAILED = "day_failed"
    RUN_FINISHED = "run_finished"
    # the daemon's life
    DAEMON_STARTED = "daemon_started"
    DAEMON_STOPPING = "daemon_stopping"
    DAEMON_STOPPED = "daemon_stopped"
    DATABASE_READY = "database_ready"
    EMBEDDED_DATABASE_READY = "embedded_database_ready"
    SOCKET_BOUND = "socket_bound"
    WORKER_DID_NOT_STOP = "worker_did_not_stop"
    # requests
    REQUEST_REFUSED = "request_refused"
    REQUEST_FAILED = "request_failed"
    CANCEL_REQUESTED = "cancel_requested"
    # runs and their lock
    RUN_INTERRUPTED = "run_interrupted"
    RUN_LOCK_RETAKEN = "run_lock_retaken"
    RUN_LOCK_LOST = "run_lock_lost"
    RUN_ERROR = "run_error"
    RUN_RECORD_FAILED = "run_record_failed"
    RECOVERY_DEFERRED = "recovery_deferred"
    LOCK_SESSION_CHECKED = "lock_session_checked"  # start-up: the run lock's connection is one real session
    STRAY_WRITE_ENDED = "stray_write_ended"
    STRAY_WRITE_NOT_ENDED = "stray_write_not_ended"
    WORKER_ERROR = "worker_error"
    IDLE_HOUSEKEEPING_FAILED = "idle_housekeeping_failed"
    # fetching and writing
    FETCH_FAILED = "fetch_failed"
    FETCH_RETRY = "fetch_retry"
    DB_RECONNECT = "db_reconnect"
    REFERENCE_DATA_UNAVAILABLE = "reference_data_unavailable"
    CALENDAR_BEYOND_HORIZON = "calendar_beyond_horizon"
    PARTITION_COMPACTED = "partition_compacted"              # a closed year rewritten stored by stock (db/compaction.py)
    PARTITION_COMPACTION_DEFERRED = "partition_compaction_deferred"  # readers kept daily_bars busy: next time
    PARTITION_COMPACTION_FAILED = "partition_compaction_failed"      # not tried again until the daemon restarts
    # the fetch plans (sync-flow)
    RUN_PLANNED = "run_planned"
    DAYS_UNCONFIRMED = "days_unconfirmed"
    DAY_INCOMPLETE = "day_incomplete"
    DAY_FALLBACK = "day_fallback"  # a fallback source asked for a day the primary failed or left incomplete
    STOCKS_STAGED = "stocks_staged"
    # sources (syncd/sources/)
    SOURCE_PAUSED = "source_paused"                            # a ban-like answer or a quota: every request waits
    SOURCE_SETTING_IGNORED = "source_setting_ignored"
    SOURCE_FACTORS_UNAVAILABLE = "source_factors_unavailable"  # adj_factor/pre_close NULL for some stocks
    SOURCE_DATASET_UNAVAILABLE = "source_dataset_unavailable"  # an optional dataset refused: its columns fall back
    SOURCE_FALLBACK = "source_fallback"                        # a whole-market answer was empty: asked by stock
    FETCH_PROCESS_STARTED = "fetch_process_started"  # the source's fetches run in this child (sources/fetchproc.py)
    FETCH_PROCESS_EXITED = "fetch_process_exited"    # it ended (a new one starts on the next fetch)
    # reconciliation against a second source (reconciler.py, control/reconcile.py)
    RECONCILE_STARTED = "reconcile_started"
    RECONCILE_FINISHED = "reconcile_finished"
    RECONCILE_FAILED = "reconcile_failed"      # the job ended early: its error (reconcile_finished follows)
    RECONCILE_REFUSED = "reconcile_refused"    # a scheduled sample whose plan passes verify.max_requests
    # the schedule
    SCHEDULE_RUN_STARTED = "schedule_run_started"
    SCHEDULE_NOTHING_MISSING = "schedule_nothing_missing"
    SCHEDULE_NOT_TRADING_DAY = "schedule_not_trading_day"
    SCHEDULE_JOB_FAILED = "schedule_job_failed"
    # metrics, alerts and the freshness poller (telemetry/hub.py)
    METRICS_LISTENING = "metrics_listening"
    ALERT_SENT = "alert_sent"
    ALERT_FAILED = "alert_failed"
    LATE_JUDGED = "late_judged"
    HEALTH_READ_FAILED = "health_read_failed"
    HEALTH_READ_RECOVERED = "health_read_recovered"
    # who may use the control socket (control/curve.py)
    CLIENT_REFUSED = "client_refused"
    CURVE_OPEN_ACCESS = "curve_open_access"
    CURVE_CLIENTS_LOADED = "curve_clients_loaded"
    CURVE_CLIENTS_RELOAD_FAILED = "curve_clients_reload_failed"
    SIGNAL_IGNORED = "signal_ignored"


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Configure structlog once at process start; `fmt` is auto | json | console."""
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if use_console:
        processors.append(structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback))
    else:
        # no locals in tracebacks: they would carry the DSN's password into the journal
        tracebacks = structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        processors += [tracebacks, structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )


def get_logger(**context: object) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("syncd").bind(**context)
