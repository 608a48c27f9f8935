"""Every upstream call under a deadline that holds whatever the library does inside it.

Owns `LibraryProcess`: a child process (child.py) that runs one source library's calls, one
at a time, owned by the thread that calls it. The parent waits for each answer only until
the call's deadline, and only while the run is not cancelled; past either the child is
killed (SIGKILL) and the call raises `UpstreamTimeout` or `CallCancelled`. No library code
runs in the daemon, so a library that loops on a closed socket, blocks on a stalled read or
resolves a name forever costs one killed process, never the worker. A killed or crashed
child is replaced on the next call (a new process: a fresh library session).

The child never sees the database: its environment lacks the SYNCD_* and PG* variables (the
DSN, a Tushare token: what a call needs travels in the call) and it imports no driver. It
exits when its parent dies. Starting, the wire and ending are childproc.py's (the runner the
fetch process uses too). Messages: ["setup", module, options] first, then ["call", function,
[args]]; each answered ["ok", value] or ["error", kind, message]. This module knows nothing
about bars or sources.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .base import SourceError
from .childproc import ChildGone, ChildProcess

# What a failed call can be: "banned" (HTTP 403/456/429 or an empty body: slow down),
# "network" (refused, reset, timed out inside), "closed" (the server closed the connection),
# "rejected" (bad token, no permission: retrying cannot help), "rate_limited" (a per-minute
# quota: wait and retry), "bad_answer" (an answer the library could not parse), "unavailable"
# (the library cannot be imported or set up), "error" (anything else).
FAILURE_KINDS = ("banned", "network", "closed", "rejected", "rate_limited", "bad_answer", "unavailable", "error")


class UpstreamFailure(SourceError):
    """A library call that failed inside the child; `kind` is one of FAILURE_KINDS."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class UpstreamTimeout(UpstreamFailure):
    """No answer within the call's deadline: the child was killed."""

    def __init__(self, message: str) -> None:
        super().__init__("timeout", message)


class CallCancelled(Exception):
    """The run was cancelled while a call was waiting; the child was killed."""


class LibraryProcess:
    """One child process running `module`'s calls (see child.py); `call` is not reentrant."""

    def __init__(self, module: str, options: dict[str, Any], *, label: str, start_deadline_s: float = 60.0) -> None:
        self.module = module
        self.options = options
        self.label = label
        self.start_deadline_s = start_deadline_s
        self.starts = 0  # child processes started so far (each one a fresh library session)
        self._child = ChildProcess("syncd.sources.child")
        self._lock = threading.Lock()
        self._last_used = time.monotonic()

    @property
    def alive(self) -> bool:
        return self._child.alive

    @property
    def idle_s(self) -> float:
        return time.monotonic() - self._last_used

    @property
    def pid(self) -> int | None:
        return self._child.pid

    def call(self, function: str, *args: Any, deadline_s: float, what: str,
             should_stop: Callable[[], bool] | None = None) -> Any:
        """Run `function(*args)` in the child; its answer, or UpstreamFailure / UpstreamTimeout / CallCancelled."""
        with self._lock:
            try:
                if not self.alive:
                    self._start(should_stop)
                return self._exchange(["call", function, list(args)], deadline_s, what, should_stop)
            finally:
                self._last_used = time.monotonic()

    def discard(self) -> None:
        """End the child now (safe from any thread); the next call starts a new one."""
        self._child.kill()

    close = discard

    def _start(self, should_stop: Callable[[], bool] | None) -> None:
        self._child.start()
        self.starts += 1
        try:
            self._exchange(["setup", self.module, self.options], self.start_deadline_s,
                           f"{self.label}: starting the library process", should_stop)
        except BaseException:
            self.discard()  # a child that could not set its library up serves no call
            raise

    def _exchange(self, message: list[Any], deadline_s: float, what: str,
                  should_stop: Callable[[], bool] | None) -> Any:
        deadline = time.monotonic() + deadline_s
        try:
            self._child.send(message)
            reply = self._child.receive(should_stop or _never, deadline_s)
        except ChildGone as exc:
            code = self._child.kill()
            raise UpstreamFailure("error", f"{what}: the library process ended ({_exit_text(code, exc)})") from None
        if reply is None:
            self.discard()
            if should_stop is not None and should_stop() and time.monotonic() < deadline:
                raise CallCancelled(f"{what}: cancelled while waiting for the answer")
            raise UpstreamTimeout(f"{what}: no answer within {deadline_s:g} s (stopped)")
        match reply:
            case ["ok", value]:
                return value
            case ["error", str(kind), str(text)]:
                raise UpstreamFailure(kind, f"{what}: {text}")
        self.discard()
        raise UpstreamFailure("error", f"{what}: unreadable reply from the library process")


def _never() -> bool:
    return False


def _exit_text(code: int | None, exc: BaseException) -> str:
    if code is None:
        return str(exc)
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"
