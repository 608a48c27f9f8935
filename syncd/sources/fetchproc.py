"""The source's by_day fetches in a child process: days generated, parsed and encoded off the daemon's interpreter.

The daemon's control loop, its worker and the read-ahead share one interpreter lock, so every
millisecond a source spends in Python (building a day's rows, parsing a reply, encoding the
COPY payload) is a millisecond a `status` request may wait. A source that declares
`fetches_in_child = True` (the demo) has its `fetch_days` run here instead, in a child
process that hands the worker each day ready to COPY (EncodedRows, suspects marked); the
worker thread then only waits on pipes and on PostgreSQL.

Ownership (the issue's rules for anything moved out of the worker thread):
- `FetchProcess` belongs to the worker: the daemon's main thread starts it once at start-up,
  before the worker thread exists (so the source warms up while the database is made ready,
  and a run asked for as soon as the daemon answers does not wait for it); from then on only
  the worker thread uses and stops it (Syncer), and starts it again, on the next fetch or
  housekeeping, when it has died;
- it dies with the daemon: the kernel sends it SIGKILL when the thread that started it ends
  (PR_SET_PDEATHSIG: the main thread, or the worker's for a restarted one; both live as long
  as the daemon), and it exits when its command pipe closes (childproc.py, the runner it
  shares with the library processes);
- it never writes anything on its own: it has no DSN, no socket, only its two pipes. It
  builds the source from the daemon's [source] config and answers `fetch_days` requests.

Messages (childproc.py's wire). Worker to child: ["config", source config as JSON] (first),
then ["fetch", [ordinal...]], ["stop"] (a cancel: the source's `should_stop` turns true),
["exit"]. Child to worker: ["ready"], ["day", ordinal, count, suspects | None, expected,
missing] with the day's COPY payload as its payload frame, ["rows", ordinal, rows, expected,
missing], ["failure", ordinal, error], ["count", outcome] (the source's request counter),
["error", type name, message] (the fetch raised), ["end"].
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from ..config import SourceConfig
from .base import DayBatch, DayFailure, DayStream, EncodedRows, Source, SourceError
from .childproc import ChildGone, ChildProcess, Message, ParentLink

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
        self._child = ChildProcess("syncd.sources.fetchproc")
        self._started = False
        self._count: Callable[[str], None] | None = None

    def attach_request_counter(self, count: Callable[[str], None]) -> None:
        """The metrics' counter of upstream requests: the child's source counts through it."""
        self._count = count

    # --- lifetime (worker thread only) -------------------------------------------------------
    def start(self) -> None:
        """Start the child (no-op while one runs); it warms the source up meanwhile."""
        if self._child.alive:
            return
        if self._started:
            self._on_event("fetch_process_exited", code=self._child.kill())
        pid = self._child.start()
        self._started = True
        self._send(["config", self._config])
        self._on_event("fetch_process_started", pid=pid)

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child.alive else None

    def close(self, grace_s: float = 1.0) -> None:
        """Ask the child to exit; kill it if it does not within `grace_s`."""
        self._child.close(["exit"], grace_s=grace_s)
        self._started = False

    # --- the fetch ----------------------------------------------------------------------------
    def fetch_days(self, days: Sequence[dt.date], should_stop: Callable[[], bool]) -> DayStream:
        """The source's fetch_days, run in the child; a cancel (`should_stop`) is passed on to it."""
        self.start()
        self._send(["fetch", [d.toordinal() for d in days]])
        ended = stopped = False
        try:
            while True:
                message = self._receive(should_stop if not stopped else _never)
                if message is None:  # cancelled while waiting: the child is told, its stream drained below
                    self._send(["stop"])
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
        if not self._child.alive:
            self.close()
            return
        try:
            if not stopped:
                self._send(["stop"])
            if self._drain():
                return
        except FetchProcessError:
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

    def _send(self, message: Message) -> None:
        try:
            self._child.send(message)
        except ChildGone as exc:
            raise self._died(str(exc)) from None

    def _receive(self, give_up: Callable[[], bool]) -> Message | None:
        try:
            return self._child.receive(give_up)
        except ChildGone as exc:
            raise self._died(str(exc)) from None

    def _died(self, what: str) -> FetchProcessError:
        code = self._child.close(grace_s=1.0)
        if self._started:  # once per child: a stream abandoned after its child died finds none
            self._on_event("fetch_process_exited", code=code)
        self._started = False
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
    """The child's side: one source, requests from the worker, answers to it (a ParentLink)."""

    def __init__(self, link: ParentLink) -> None:
        self.link = link
        self.stopped = False
        self.exit = False

    def send(self, message: Message, payload: bytes | bytearray | None = None) -> None:
        self.link.send(message, payload)

    def should_stop(self) -> bool:
        """The source's `should_stop`: true once the worker sent ["stop"] (or went away)."""
        while not self.stopped and self.link.pending():
            message = self.link.read()
            if message is None or message[0] in ("stop", "exit"):
                self.stopped = True
                self.exit = message is None or message[0] == "exit"
        return self.stopped

    def serve(self, source: Source) -> None:
        self.send(["ready"])
        while not self.exit and (message := self.link.read()) is not None:
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


def main(argv: list[str]) -> int:
    # The worker thread that starts us lives as long as the daemon: die with it (childproc.py).
    link = ParentLink.attach(argv, prints_to_stderr=True, die_with_thread=True)
    child = _Child(link)
    first = link.read()
    if first is None or first[0] != "config":
        return 0
    from . import load_source

    source = load_source(msgspec.json.decode(first[1], type=SourceConfig))
    source.attach_request_counter(lambda outcome: child.send(["count", outcome]))
    source.warm_up()
    try:
        child.serve(source)
    finally:
        source.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
