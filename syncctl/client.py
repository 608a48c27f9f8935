"""SyncClient: the Python way to talk to syncd, safe from many threads, never hanging past its timeout.

One REQ socket per thread, kept between calls, from a shared zmq Context (sockets are not
thread-safe; contexts are), LINGER 0, and the timeout as its receive timeout (RCVTIMEO): a
call either returns a typed reply or raises a typed error. A socket that timed out is closed
and replaced, so the next call starts fresh. An ok reply is decoded straight into its Struct;
anything else (rejected, error, not syncd's) goes through the checks that name it. `start`
always carries a request_id, so retrying it after a timeout can never start a second run.
On a CURVE endpoint the client uses the daemon's public key and, where the daemon admits
only listed clients (daemon.curve_clients_dir), its own certificate: `client_key_file`
(a NAME.key_secret from `python -m syncd.security keygen --client NAME`, or
$SYNCD_CLIENT_KEY) or `client_secret_key` (Z85).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import zmq

from syncd.protocol import (
    REPLY_TYPES,
    Cancel,
    CancelReply,
    Check,
    CheckReply,
    Day,
    Days,
    ErrorCode,
    History,
    Ping,
    PingReply,
    Request,
    Run,
    Start,
    StartReply,
    Status,
    StatusReply,
    Task,
    VerifiedDay,
    Verify,
    VerifyReply,
    encode_request,
    op_name,
    parse_date,
)

DEFAULT_TIMEOUT_S = 5.0
MAX_REPLY_WAIT_S = 60.0  # the wire's limit on a verify's wait_s
RUNNING = ("queued", "running")
T = TypeVar("T")


class SyncdError(Exception):
    """Base of every error SyncClient raises."""


class SyncdUnreachable(SyncdError):
    """No reply within the timeout: syncd is not running, or is wedged, at that endpoint."""

    def __init__(self, endpoint: str, timeout_s: float) -> None:
        super().__init__(f"syncd is not running at {endpoint} (no reply within {timeout_s:g} s)")
        self.endpoint = endpoint
        self.timeout_s = timeout_s


class SyncdBusy(SyncdError):
    """A start was rejected because a run is active; `current_task` is that run."""

    def __init__(self, message: str, current_task: Task, reply: dict[str, Any]) -> None:
        super().__init__(message)
        self.message = message
        self.current_task = current_task
        self.reply = reply


class SyncdRequestError(SyncdError):
    """syncd answered `status: error` (bad request, invalid range, not running, ...)."""

    def __init__(self, code: str, message: str, reply: dict[str, Any]) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reply = reply


class SyncdProtocolError(SyncdError):
    """The reply could not be understood (a different program on the endpoint?)."""


def _date(value: dt.date | str, what: str) -> dt.date:
    """A date, or a YYYY-MM-DD string (the wire's one rule); SyncdRequestError(bad_request) otherwise."""
    if isinstance(value, dt.date):
        return value
    try:
        return parse_date(value, what)
    except ValueError as exc:
        raise SyncdRequestError(ErrorCode.BAD_REQUEST, str(exc), {}) from None


class SyncClient:
    """Calls syncd's ops. `endpoint` defaults to $SYNCD_ENDPOINT; `timeout` is seconds per call."""

    def __init__(self, endpoint: str | None = None, timeout: float = DEFAULT_TIMEOUT_S, *,
                 server_public_key: str | None = None, context: zmq.Context[Any] | None = None,
                 client_secret_key: str | None = None, client_key_file: str | os.PathLike[str] | None = None) -> None:
        endpoint = endpoint or os.environ.get("SYNCD_ENDPOINT")
        if not endpoint:
            raise ValueError("no syncd endpoint: pass endpoint= or set SYNCD_ENDPOINT (e.g. ipc:///run/syncd/syncd.sock)")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.endpoint = endpoint
        self.timeout = timeout
        self.server_public_key = server_public_key or os.environ.get("SYNCD_SERVER_KEY") or None
        self._client_keypair = _client_keypair(self.server_public_key, client_secret_key, client_key_file)
        self._context = context or zmq.Context.instance()
        self._local = threading.local()

    # --- the ops -------------------------------------------------------------------------
    def ping(self) -> PingReply:
        return self.call(Ping())

    def start(self, start_date: dt.date | str, end_date: dt.date | str, *, task_type: str = "manual",
              requested_by: str = "", request_id: str | None = None) -> StartReply:
        """Start a run; raises SyncdBusy with the running task if one is active."""
        return self.call(Start(start_date=_date(start_date, "start_date"), end_date=_date(end_date, "end_date"),
                               task_type=task_type, requested_by=requested_by,
                               request_id=request_id or uuid.uuid4().hex))

    def status(self) -> StatusReply:
        return self.call(Status())

    def cancel(self, run_id: str | None = None) -> CancelReply:
        return self.call(Cancel(run_id=run_id))

    def history(self, limit: int = 20) -> list[Run]:
        return self.call(History(limit=limit)).runs

    def days(self, start_date: dt.date | str, end_date: dt.date | str) -> list[Day]:
        return self.call(Days(start_date=_date(start_date, "start_date"), end_date=_date(end_date, "end_date"))).days

    def verify(self, start_date: dt.date | str, end_date: dt.date | str, *, against: str | None = None) -> list[VerifiedDay]:
        """Each day's coverage and anomalies; a day with `checked` False was not checked yet (ask again).
        `against`: compared with that source first (`reconcile`), its findings among the anomalies."""
        if against is not None:
            return self.reconcile(start_date, end_date, against).days
        return self.call(Verify(start_date=_date(start_date, "start_date"), end_date=_date(end_date, "end_date"))).days

    def reconcile(self, start_date: dt.date | str, end_date: dt.date | str, against: str, *, plan_only: bool = False,
                  deadline_s: float | None = None, progress: Callable[[VerifyReply], None] | None = None) -> VerifyReply:
        """`verify` with `against`: the stored days compared with that source, the reply once the reconciliation
        has ended. It runs in the daemon; each call waits at most half this client's timeout for it, and it is
        asked about again (by its reconcile_id) until it ends, `progress(reply)` after each answer. `deadline_s`:
        return the last reply (still running) after that long. `plan_only`: its request plan, nothing fetched.
        A plan over the daemon's verify.max_requests raises SyncdRequestError(invalid_range) naming the count."""
        start, end = _date(start_date, "start_date"), _date(end_date, "end_date")
        wait_s = round(min(self.timeout / 2, MAX_REPLY_WAIT_S), 3)
        reply: VerifyReply = self.call(Verify(start_date=start, end_date=end, against=against, plan_only=plan_only,
                                              wait_s=wait_s))
        began = time.monotonic()
        while reply.reconciliation is not None and reply.reconciliation.state in RUNNING:
            if progress is not None:
                progress(reply)
            if deadline_s is not None and time.monotonic() - began >= deadline_s:
                break
            reply = self.call(Verify(start_date=start, end_date=end, against=against, wait_s=wait_s,
                                     reconcile_id=reply.reconciliation.reconcile_id))
        return reply

    def check(self) -> CheckReply:
        """Is the data fresh? The daemon's verdict (`healthy`, `reason`, the day and the last scheduled run)."""
        return self.call(Check())

    def call(self, request: Request) -> Any:
        """Send any request and return its whole ok reply (the Struct its op declares), or raise a typed error."""
        return self._call(request, REPLY_TYPES[op_name(type(request))])

    def request(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Send any JSON object and return the raw reply (for tools and tests); no status checks."""
        return msgspec.json.decode(self.send_raw(msgspec.json.encode(payload)))

    # --- transport -----------------------------------------------------------------------
    def _call(self, request: Request, reply_type: type[T]) -> T:
        raw = self.send_raw(encode_request(request))
        try:
            return _ok_decoder(reply_type).decode(raw)  # the common case, in one pass
        except msgspec.DecodeError:
            pass  # rejected, an error, or not an ok reply of this op at all: the checks below say which
        try:
            reply = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            raise SyncdProtocolError(f"reply from {self.endpoint} is not JSON: {exc}") from None
        if not isinstance(reply, dict):
            raise SyncdProtocolError(f"reply from {self.endpoint} is not a JSON object")
        status = reply.get("status")
        try:
            if status == "rejected":
                raise SyncdBusy(reply.get("message", "busy"), msgspec.convert(reply["current_task"], Task), reply)
            if status == "error":
                raise SyncdRequestError(str(reply.get("code", "error")), str(reply.get("message", "")), reply)
            return msgspec.convert(reply, reply_type)
        except (msgspec.ValidationError, KeyError) as exc:
            raise SyncdProtocolError(f"unexpected reply from {self.endpoint}: {exc}") from None

    def send_raw(self, frame: bytes) -> bytes:
        """One request frame out, one reply frame back, or SyncdUnreachable after `timeout`."""
        sock = self._thread_socket()
        try:
            sock.send(frame)
            try:
                return sock.recv()  # waits at most RCVTIMEO: the timeout
            except zmq.Again:
                raise SyncdUnreachable(self.endpoint, self.timeout) from None
        except BaseException:
            self.close()  # a REQ socket left mid-exchange is unusable: the next call gets a fresh one
            raise

    def close(self) -> None:
        """Close this thread's socket (other threads' sockets close with their threads)."""
        sock = getattr(self._local, "socket", None)
        self._local.socket = None
        if sock is not None:
            sock.close(linger=0)

    def _thread_socket(self) -> zmq.Socket[Any]:
        """This thread's REQ socket, kept between calls (zmq sockets must not cross threads)."""
        sock = getattr(self._local, "socket", None)
        if sock is not None and self._local.pid == os.getpid():
            if self._local.timeout != self.timeout:  # the caller changed it since
                sock.setsockopt(zmq.RCVTIMEO, _timeout_ms(self.timeout))
                self._local.timeout = self.timeout
            return sock
        sock = self._context.socket(zmq.REQ)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVTIMEO, _timeout_ms(self.timeout))
            if self.server_public_key:
                from syncd.control.curve import apply_client_curve

                apply_client_curve(sock, self.server_public_key, *(self._client_keypair or ()))
            sock.connect(self.endpoint)
        except BaseException:
            sock.close(linger=0)
            raise
        self._local.socket, self._local.pid, self._local.timeout = sock, os.getpid(), self.timeout
        return sock


def _timeout_ms(timeout_s: float) -> int:
    return max(1, round(timeout_s * 1000))


_OK_DECODERS: dict[type[Any], msgspec.json.Decoder[Any]] = {t: msgspec.json.Decoder(t) for t in REPLY_TYPES.values()}


def _ok_decoder(reply_type: type[T]) -> msgspec.json.Decoder[T]:
    """The decoder of an op's ok reply (made once, at import), straight from JSON to the Struct."""
    return _OK_DECODERS.get(reply_type) or msgspec.json.Decoder(reply_type)


def _client_keypair(server_public_key: str | None, secret_key: str | None,
                    key_file: str | os.PathLike[str] | None) -> tuple[str, str] | None:
    """This client's own (public, secret) CURVE keys, from the arguments or $SYNCD_CLIENT_KEY (a certificate file);
    None: a throw-away pair per connection. ValueError for an unreadable file or a malformed key."""
    if secret_key is not None and key_file is not None:
        raise ValueError("pass client_secret_key or client_key_file, not both")
    explicit = secret_key is not None or key_file is not None
    key_file = key_file if explicit else (os.environ.get("SYNCD_CLIENT_KEY") or None)
    if secret_key is None and key_file is None:
        return None
    if not server_public_key:
        if explicit:
            raise ValueError("a client key needs the server's public key too (server_public_key= or SYNCD_SERVER_KEY)")
        return None  # $SYNCD_CLIENT_KEY set for another (CURVE) endpoint: this one speaks plain
    from syncd.control.curve import client_public_key, load_client_certificate

    if key_file is not None:
        return load_client_certificate(key_file)
    assert secret_key is not None
    return client_public_key(secret_key), secret_key


__all__ = ["SyncClient", "SyncdBusy", "SyncdError", "SyncdProtocolError", "SyncdRequestError", "SyncdUnreachable",
           "DEFAULT_TIMEOUT_S", "REPLY_TYPES"]
