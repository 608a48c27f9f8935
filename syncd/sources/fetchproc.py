"""The source's by_day fetches in a child process: days generated, parsed and encoded off the daemon's interpreter.

The daemon's control loop, its worker and the read-ahead share one interpreter lock, so every
millisecond a source spends in Python (building a day's rows, parsing a reply, encoding the
COPY payload) is a millisecond a `status` request may wait. A source that declares
`fetches_in_child = True` (the demo) has its `fetch_days` run here instead, in a child
process that hands the worker each day ready to COPY (EncodedRows, suspects marked); the
worker thread then only waits on pipes and on PostgreSQL.

Ownership (the issue's rules for anything moved out of the worker thread):
- `FetchProcess` belongs to the worker: only the worker thread starts, uses and stops it
  (Syncer), and it is started again, on the next fetch, when it has died;
- it dies with the daemon: the kernel sends it SIGKILL when the thread that started it ends
  (PR_SET_PDEATHSIG), and it exits when its command pipe closes;
- it never writes anything on its own: it has no DSN, no socket, only its two pipes. It
  builds the source from the daemon's [source] config and answers `fetch_days` requests.

Wire, both ways: 4-byte big-endian length, then a msgpack array. Worker to child: the
source config (first, JSON), then ["fetch", [ordinal...]], ["stop"] (a cancel: the source's
`should_stop` turns true), ["exit"]. Child to worker: ["ready"], ["day", ordinal, count,
suspects | None, expected, missing] followed by the payload as a frame of its own (length,
bytes: written from and read into one buffer each, never copied in between), ["rows",
ordinal, rows, expected, missing],
["failure", ordinal, error], ["count", outcome] (the source's request counter), ["error",
type name, message] (the fetch raised), ["end"].
"""

from __future__ import annotations

import ctypes
import datetime as dt
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from ..config import SourceConfig
from .base import DayBatch, DayFailure, DayStream, EncodedRows, Source, SourceError

_LENGTH = struct.Struct(">I")
_PIPE_BYTES = 1 << 20         # a whole day's payload fits: the child starts on the next day at once
_F_SETPIPE_SZ = 1031
_PR_SET_PDEATHSIG = 1
POLL_S = 0.05                 # how often a worker waiting for a day looks at its cancel flag
STOP_DRAIN_S = 10.0           # after a stop, how long the child may take to end its stream before it is killed
START_TIMEOUT_S = 60.0        # importing the source's libraries and warming it up


class FetchProcessError(SourceError):
    """The fetch process died, or broke the wire: the fetch failed (the next one starts a new process)."""


_remote_types: dict[str, type[Exception]] = {}


def _remote_exception(name: str, message: str) -> Exception:
    """The child's exception as one of the same type name (byday reports `Type: message`), a SourceError."""
    if name not in _remote_types:
        _remote_types[name] = type(name, (SourceError,), {"__module__": __name__})
    return _remote_types[name](message)


class FetchProcess:
    """The worker's child process for a source's fetches (see the module docstring)."""

    reads_ahead = True  # the child works a day ahead of the worker: no read-ahead thread on top

    def __init__(self, config: SourceConfig, on_event: Callable[..., None] | None = None) -> None:
        self._config = msgspec.json.encode(config)
        self.name = config.name  # the source's, for its request counter's label
        self._on_event = on_event or (lambda event, **fields: None)
        self._proc: subprocess.Popen[bytes] | None = None
        self._count: Callable[[str], None] | None = None

    def attach_request_counter(self, count: Callable[[str], None]) -> None:
        """The metrics' counter of upstream requests: the child's source counts through it."""
        self._count = count

    # --- lifetime (worker thread only) -------------------------------------------------------
    def start(self) -> None:
        """Start the child (no-op while one runs); it warms the source up meanwhile."""
        if self._proc is not None and self._proc.poll() is None:
            return
        if self._proc is not None:
            self._on_event("fetch_process_exited", code=self._proc.returncode)
        self._proc = subprocess.Popen([sys.executable, "-m", "syncd.sources.fetchproc", str(os.getpid())], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, bufsize=0, close_fds=True)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        for pipe in (self._proc.stdin, self._proc.stdout):
            try:
                fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
            except OSError:
                pass  # a smaller pipe still works: the child waits for the worker sooner
        self._send(self._config)
        self._on_event("fetch_process_started", pid=self._proc.pid)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def close(self) -> None:
        """Ask the child to exit; kill it if it does not within a second."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                self._write(proc, msgspec.msgpack.encode(["exit"]))
                proc.wait(1.0)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()

    # --- the fetch ----------------------------------------------------------------------------
    def fetch_days(self, days: Sequence[dt.date], should_stop: Callable[[], bool]) -> DayStream:
        """The source's fetch_days, run in the child; a cancel (`should_stop`) is passed on to it."""
        self.start()
        self._send(msgspec.msgpack.encode(["fetch", [d.toordinal() for d in days]]))
        ended = stopped = False
        try:
            while True:
                message = self._receive(should_stop if not stopped else _never)
                if message is None:  # cancelled while waiting: the child is told, its stream drained below
                    self._send(msgspec.msgpack.encode(["stop"]))
                    stopped = True
                    continue
                kind = message[0]
                if kind == "end":
                    ended = True
                    return
                if kind == "ready":
                    continue
                if kind == "count":
                    if self._count is not None:
                        self._count(message[1])
                    continue
                if kind == "error":
                    ended = self._drain()
                    raise _remote_exception(message[1], message[2])
                yield _batch(message)
        finally:
            if not ended:
                self._abandon(stopped)

    def _abandon(self, stopped: bool) -> None:
        """The consumer left mid-stream (a cancel, a failed write, an error): end the child's stream, or the child."""
        try:
            if not stopped:
                self._send(msgspec.msgpack.encode(["stop"]))
            if self._drain():
                return
        except (OSError, FetchProcessError):
            pass
        self.close()

    def _drain(self) -> bool:
        """Read and drop the child's messages up to its ["end"]; False if it takes over STOP_DRAIN_S."""
        deadline = time.monotonic() + STOP_DRAIN_S
        while time.monotonic() < deadline:
            message = self._receive(lambda: time.monotonic() >= deadline)
            if message is not None and message[0] == "end":
                return True
        return False

    # --- the wire ------------------------------------------------------------------------------
    def _send(self, body: bytes) -> None:
        assert self._proc is not None
        try:
            self._write(self._proc, body)
        except OSError as exc:
            raise self._died(f"cannot send to it ({exc})") from None

    @staticmethod
    def _write(proc: subprocess.Popen[bytes], body: bytes) -> None:
        assert proc.stdin is not None
        _write_all(proc.stdin.fileno(), _LENGTH.pack(len(body)) + body)

    def _receive(self, give_up: Callable[[], bool]) -> list[Any] | None:
        """The next message; None when `give_up()` turned true while none was coming."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()  # unbuffered: what select() sees is all there is
        while not select.select([fd], [], [], POLL_S)[0]:
            if give_up():
                return None
        message = _read_message(fd)
        if message is None:
            raise self._died("it closed its pipe")
        return message

    def _died(self, what: str) -> FetchProcessError:
        proc, code = self._proc, None
        if proc is not None:
            try:
                code = proc.wait(1.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
        self.close()
        self._on_event("fetch_process_exited", code=code)
        return FetchProcessError(f"the fetch process failed: {what} (exit code {code}); the next fetch starts a new one")


def _never() -> bool:
    return False


def _batch(message: list[Any]) -> tuple[dt.date, DayBatch | DayFailure]:
    kind, day = message[0], dt.date.fromordinal(message[1])
    if kind == "failure":
        return day, DayFailure(message[2])
    if kind == "day":
        _, _, count, suspects, expected, missing, payload = message
        rows = EncodedRows(payload, count, None if suspects is None else frozenset(suspects))
        return day, DayBatch(rows, expected=expected, missing=frozenset(missing))
    if kind == "rows":
        _, _, rows, expected, missing = message
        return day, DayBatch([tuple(row) for row in rows], expected=expected, missing=frozenset(missing))
    raise FetchProcessError(f"the fetch process sent {kind!r}, which is not a day")


# --- the child ---------------------------------------------------------------------------------

class _Child:
    """The child's side: one source, requests from stdin, answers on a private copy of stdout."""

    def __init__(self, commands: int, answers: int) -> None:
        self.commands, self.answers = commands, answers
        self.stopped = False
        self.exit = False

    def read_raw(self) -> bytes | None:
        head = _read_exactly(self.commands, _LENGTH.size)
        return None if head is None else _read_exactly(self.commands, _LENGTH.unpack(head)[0])

    def read(self) -> list[Any] | None:
        body = self.read_raw()
        return None if body is None else msgspec.msgpack.decode(body)

    def send(self, message: list[Any], payload: bytes | bytearray | None = None) -> None:
        """One message; a day's `payload` follows it as a frame of its own (never copied into the message)."""
        body = msgspec.msgpack.encode(message)
        frames: list[bytes | bytearray | memoryview] = [_LENGTH.pack(len(body)), body]
        if payload is not None:
            frames += [_LENGTH.pack(len(payload)), payload]
        _write_frames(self.answers, frames)

    def should_stop(self) -> bool:
        """The source's `should_stop`: true once the worker sent ["stop"] (or went away)."""
        while not self.stopped and select.select([self.commands], [], [], 0)[0]:
            message = self.read()
            if message is None or message[0] in ("stop", "exit"):
                self.stopped = True
                self.exit = message is None or message[0] == "exit"
        return self.stopped

    def serve(self, source: Source) -> None:
        self.send(["ready"])
        while not self.exit and (message := self.read()) is not None:
            if message[0] == "exit":
                return
            if message[0] == "fetch":
                self.stopped = False
                self._fetch(source, [dt.date.fromordinal(o) for o in message[1]])

    def _fetch(self, source: Source, days: list[dt.date]) -> None:
        try:
            for day, result in source.fetch_days(days, self.should_stop):
                payload = result.rows.payload if isinstance(result, DayBatch) and isinstance(result.rows, EncodedRows) else None
                self.send(_encode(day, result), payload)
                if self.stopped:
                    break
        except Exception as exc:  # handed to the worker, which raises it as the fetch's failure
            self.send(["error", type(exc).__name__, str(exc)])
        self.send(["end"])


def _encode(day: dt.date, result: DayBatch | DayFailure) -> list[Any]:
    if isinstance(result, DayFailure):
        return ["failure", day.toordinal(), result.error]
    missing = sorted(result.missing)
    if isinstance(result.rows, EncodedRows):
        suspects = None if result.rows.suspects is None else sorted(result.rows.suspects)
        return ["day", day.toordinal(), result.rows.count, suspects, result.expected, missing]  # the payload follows
    return ["rows", day.toordinal(), [list(row) for row in result.rows], result.expected, missing]


def _write_all(fd: int, data: bytes) -> None:
    _write_frames(fd, [data])


def _write_frames(fd: int, frames: list[bytes | bytearray | memoryview]) -> None:
    views = [memoryview(frame) for frame in frames if len(frame)]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


def _read_message(fd: int) -> list[Any] | None:
    """A message, and for a ["day", ...] its payload frame appended (read straight into one buffer)."""
    head = _read_exactly(fd, _LENGTH.size)
    body = None if head is None else _read_exactly(fd, _LENGTH.unpack(head)[0])
    if body is None:
        return None
    message: list[Any] = msgspec.msgpack.decode(body)
    if message[0] == "day":
        size = _read_exactly(fd, _LENGTH.size)
        payload = None if size is None else _read_into(fd, bytearray(_LENGTH.unpack(size)[0]))
        if payload is None:
            return None
        message.append(payload)
    return message


def _read_into(fd: int, buffer: bytearray) -> bytearray | None:
    view, done = memoryview(buffer), 0
    while done < len(buffer):
        got = os.readv(fd, [view[done:]])
        if not got:
            return None
        done += got
    return buffer


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the thread that started us ends (Linux); and if it is already gone, go now."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the closed command pipe still ends us
    if os.getppid() != parent:
        os._exit(0)


def main(argv: list[str]) -> int:
    _die_with_parent(int(argv[0]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the daemon's to handle; it closes us
    answers = os.dup(1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the answers
    child = _Child(sys.stdin.fileno(), answers)
    raw = child.read_raw()
    if raw is None:
        return 0
    config = msgspec.json.decode(raw, type=SourceConfig)
    from . import load_source

    source = load_source(config)
    source.attach_request_counter(lambda outcome: child.send(["count", outcome]))
    source.warm_up()
    try:
        child.serve(source)
    finally:
        source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
