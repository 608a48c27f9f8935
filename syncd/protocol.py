"""The wire contract between syncd and its clients: every request and reply as msgspec Structs.

This module owns the shape of the JSON that crosses the ZeroMQ socket (docs/protocol.md):
one tagged Struct per request (tag field `op`), one Struct per reply, and the
Task/Run/Day records they carry. It validates what can be validated without state (types,
real dates, start <= end). It must import nothing but msgspec and the standard library:
`syncctl` and web backends import it without psycopg, pgserver or a source library.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, get_args

import msgspec

MAX_FRAME_BYTES = 64 * 1024  # a request is a few hundred bytes; anything bigger is refused

TaskType = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
ShortText = Annotated[str, msgspec.Meta(max_length=200)]
_WIRE_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class ErrorCode(StrEnum):
    """The `code` of every non-ok reply. Clients (CLI, web) map these, never string literals."""

    BUSY = "busy"                              # status "rejected": a run is active (here or on another daemon)
    BAD_REQUEST = "bad_request"                # undecodable, unknown op or field, wrong types, impossible dates
    INVALID_RANGE = "invalid_range"            # start after end, or a range over sync.max_days
    NOT_RUNNING = "not_running"                # cancel with nothing (or another run) to cancel
    DATABASE_UNAVAILABLE = "database_unavailable"
    INTERNAL = "internal"                      # a bug: logged with its traceback, never sent


# --- records carried by replies -------------------------------------------------------------

class Task(msgspec.Struct, kw_only=True):
    """A run as it is in flight: what `start` returns and `status`/busy replies carry."""

    run_id: str
    task_type: str
    requested_by: str
    start_time: str
    start_date: str
    end_date: str
    total_days: int
    trading_days: int = 0
    days_done: int = 0
    days_failed: int = 0
    rows: int = 0
    current_date: str | None = None
    progress: float = 0.0
    eta_s: float | None = None
    request_id: str | None = None
    host: str | None = None  # the daemon running it (another host's, when the run lock is held there)
    pid: int | None = None
    fallback_source: str | None = None  # while a fallback source is asked for current_date's missing stocks: its name


class Run(msgspec.Struct, kw_only=True):
    """A run as recorded in sync_runs (history, last_run)."""

    run_id: str
    task_type: str
    requested_by: str
    status: str
    start_date: str
    end_date: str
    total_days: int
    trading_days: int
    days_done: int
    days_failed: int
    rows: int
    started_at: str
    finished_at: str | None
    error: str | None
    host: str
    pid: int


class Day(msgspec.Struct, kw_only=True):
    date: str
    status: str
    rows: int
    run_id: str | None
    error: str | None
    expected: int | None = None  # stocks the source says were listed that day (null: it cannot say)
    missing: int = 0             # stocks whose request failed (the day is then `incomplete`)
    source: str | None = None    # the source that wrote the day (null: unknown, written before syncd recorded it)
    fallback_stocks: int = 0     # of its stocks, how many a fallback source supplied (docs/data.md, "Provenance")
    reason: str | None = None    # a skipped day: why it does not trade (weekend, holiday (NAME), the source's calendar)


class Finding(msgspec.Struct, kw_only=True):
    """One row that failed a check (docs/data.md, "What is checked")."""

    stock: str
    check: str
    detail: str
    source: str | None = None  # the other source of a reconciliation's finding (source_mismatch, source_missing)


class VerifiedDay(msgspec.Struct, kw_only=True):
    """A day as `verify` judges it: its coverage, and its anomalies with the first few findings."""

    date: str
    status: str
    rows: int
    expected: int | None
    missing: int = 0
    anomalies: int
    findings: list[Finding]
    source: str | None = None    # the source that wrote the day, as in Day
    fallback_stocks: int = 0
    # False only for a day written by an earlier version that this request had no time left to check:
    # its anomalies are not known yet (ask again; `syncctl verify` does)
    checked: bool = True


class Reconciliation(msgspec.Struct, kw_only=True):
    """A comparison of stored days with a second source (`verify` with `against`; docs/sources.md)."""

    reconcile_id: str
    against: str
    state: Literal["planned", "queued", "running", "done", "failed", "cancelled"]
    start_date: str
    end_date: str
    plan: str                      # by_day | by_stock: how the other source is asked
    cost: str                      # how its requests add up, in words
    planned_requests: int          # known before anything is fetched (verify.max_requests refuses more)
    requests: int = 0              # made so far
    days: int = 0                  # stored days to compare
    days_done: int = 0
    stocks: int | None = None      # stocks compared (a sample, or a by-stock source's); null: every stock of each day
    findings: int = 0              # source_mismatch and source_missing findings stored by it
    by_check: dict[str, int] = {}  # findings by check
    errors: list[str] = []         # what the other source could not give (first few), not compared
    error: str | None = None       # why it failed
    requested_by: str = ""         # a client, or "schedule" (verify.sample after a daily sync)


class ScheduledJob(msgspec.Struct, kw_only=True):
    job: str
    next_run: str | None


class DaemonInfo(msgspec.Struct, kw_only=True):
    version: str
    pid: int
    uptime_s: float
    endpoint: str
    source: str
    database: str
    metrics: str | None = None  # where Prometheus scrapes it (http://HOST:PORT/metrics), null when [metrics] is off


# --- replies ---------------------------------------------------------------------------------

class Ok(msgspec.Struct, kw_only=True):
    """Base of every `status: ok` reply."""

    status: Literal["ok"] = "ok"


class PingReply(Ok, kw_only=True):
    version: str
    pid: int
    uptime_s: float


class StartReply(Ok, kw_only=True):
    run_id: str
    task: Task


class StatusReply(Ok, kw_only=True):
    state: Literal["idle", "running", "cancelling"]
    current_task: Task | None
    last_run: Run | None
    schedule: list[ScheduledJob]
    daemon: DaemonInfo


class CancelReply(Ok, kw_only=True):
    run_id: str
    state: str


class HistoryReply(Ok, kw_only=True):
    runs: list[Run]


class DaysReply(Ok, kw_only=True):
    days: list[Day]


class VerifyReply(Ok, kw_only=True):
    days: list[VerifiedDay]
    against: str | None = None                   # the source compared with (null: no reconciliation)
    requests: int = 0                            # requests the reconciliation made
    reconciliation: Reconciliation | None = None


class CheckReply(Ok, kw_only=True):
    """`check`: is the data fresh? (the daemon judges: docs/operations.md, "Health check")."""

    healthy: bool
    reason: str
    latest_completed_trading_day: str | None  # YYYY-MM-DD; null when no calendar confirms one
    day_status: str | None                    # that day's status (pending when never synced)
    last_scheduled_run: Run | None            # the newest scheduler_daily / scheduler_missing run


class BusyReply(msgspec.Struct, kw_only=True):
    status: Literal["rejected"] = "rejected"
    code: Literal[ErrorCode.BUSY] = ErrorCode.BUSY
    message: str
    current_task: Task


class ErrorReply(msgspec.Struct, kw_only=True):
    status: Literal["error"] = "error"
    code: str
    message: str


# --- requests: each names its op (the tag) and its ok reply ------------------------------------

class Request(msgspec.Struct, tag_field="op", forbid_unknown_fields=True, frozen=True):
    """Base of every request; `op` names the operation, `reply` is the type of its ok reply."""

    reply: ClassVar[type[Ok]]


class Ping(Request, tag="ping", frozen=True):
    reply = PingReply


class RangeRequest(Request, frozen=True):
    """A request over an inclusive range of calendar days (checked: start_date <= end_date)."""

    start_date: dt.date
    end_date: dt.date


class Start(RangeRequest, tag="start", frozen=True):
    reply = StartReply
    task_type: TaskType = "manual"
    requested_by: ShortText = ""
    request_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None


class Status(Request, tag="status", frozen=True):
    reply = StatusReply


class Cancel(Request, tag="cancel", frozen=True):
    reply = CancelReply
    run_id: Annotated[str, msgspec.Meta(max_length=128)] | None = None


class History(Request, tag="history", frozen=True):
    reply = HistoryReply
    limit: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20


class Days(RangeRequest, tag="days", frozen=True):
    reply = DaysReply


class Verify(RangeRequest, tag="verify", frozen=True):
    """With `against`, the days are compared with that source first (a reconciliation, run off the
    control loop): the reply waits up to `wait_s` for it, else it says how far it got and the
    client asks again with its `reconcile_id`. `plan_only`: the request plan alone, nothing fetched."""

    reply = VerifyReply
    against: Annotated[str, msgspec.Meta(min_length=1, max_length=32)] | None = None
    plan_only: bool = False
    reconcile_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    wait_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = 2.0


class Check(Request, tag="check", frozen=True):
    reply = CheckReply


# The one list of ops: everything else (the decoder, OPS, REPLY_TYPES, error hints) derives from it.
AnyRequest = Ping | Start | Status | Cancel | History | Days | Verify | Check
REQUEST_TYPES: tuple[type[Request], ...] = get_args(AnyRequest)


def op_name(request_type: type[Request]) -> str:
    return str(request_type.__struct_config__.tag)


OPS: tuple[str, ...] = tuple(op_name(t) for t in REQUEST_TYPES)
REPLY_TYPES: dict[str, type[Ok]] = {op_name(t): t.reply for t in REQUEST_TYPES}


class RequestError(Exception):
    """A request that cannot be served; becomes an ErrorReply with `code`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def reply(self) -> ErrorReply:
        return ErrorReply(code=self.code, message=self.message)


_request_decoder = msgspec.json.Decoder(AnyRequest)
_encoder = msgspec.json.Encoder()


def decode_request(frame: bytes) -> AnyRequest:
    """Decode and validate one request frame; raise RequestError naming the problem."""
    return validate_request(parse_request(frame))


def validate_request(request: AnyRequest) -> AnyRequest:
    """The checks a well-formed request must pass beyond its shape (a range's order and length)."""
    if isinstance(request, RangeRequest):
        check_range(request.start_date, request.end_date)
    return request


def parse_request(frame: bytes) -> AnyRequest:
    """Decode one request frame into its typed request, unvalidated (validate_request); RequestError when
    it is no request at all."""
    if len(frame) > MAX_FRAME_BYTES:
        raise RequestError(ErrorCode.BAD_REQUEST, f"request of {len(frame)} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")
    try:
        request = _request_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise RequestError(ErrorCode.BAD_REQUEST, _explain_validation(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise RequestError(ErrorCode.BAD_REQUEST, f"request is not a JSON object: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec raises it, not DecodeError, for bad UTF-8 in a string it keeps
        raise RequestError(ErrorCode.BAD_REQUEST, f"request is not valid UTF-8: {exc.reason} in a string") from None
    return request


def _explain_validation(detail: str) -> str:
    if ("Invalid value" in detail and "`$.op`" in detail) or "Missing required field `op`" in detail:
        return f"{detail}; op must be one of: {', '.join(OPS)}"
    return detail


def check_range(start: dt.date, end: dt.date, max_days: int | None = None) -> int:
    """Return the number of calendar days in [start, end]; raise RequestError if invalid."""
    if start > end:
        raise RequestError(ErrorCode.INVALID_RANGE, f"start_date {start} is after end_date {end}")
    total = (end - start).days + 1
    if max_days is not None and total > max_days:
        raise RequestError(
            ErrorCode.INVALID_RANGE,
            f"range {start}..{end} has {total} days, more than sync.max_days = {max_days}",
        )
    return total


def parse_date(value: str, what: str = "date") -> dt.date:
    """The wire's one date rule, YYYY-MM-DD, for every client (CLI, SyncClient, web); ValueError naming `what`.

    (Python's date.fromisoformat alone also takes 20251009 and 2025-W41-4; the wire does not.)
    """
    if not _WIRE_DATE.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a date (expected YYYY-MM-DD)")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{what} {value!r} is not a real date ({exc})") from None


def encode(message: Any) -> bytes:
    return _encoder.encode(message)


def encode_request(request: Request) -> bytes:
    return _encoder.encode(request)
