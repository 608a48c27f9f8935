"""structlog set-up for syncd: JSON lines under systemd or a pipe, console rendering on a TTY.

This module owns how log events look (DESIGN.md, "Log events"): every line carries `event`,
`level` and an ISO UTC `timestamp`; run-scoped events also carry `run_id`/`task_type`, bound
explicitly by the caller (context variables do not follow into the worker thread). It does
not decide what is logged.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

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
