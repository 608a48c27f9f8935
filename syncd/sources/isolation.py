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
exits when its parent dies. This module knows nothing about bars or sources.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .base import SourceError

POLL_S = 0.1  # how often a waiting call looks at its cancel flag
KILL_WAIT_S = 5.0
# What a failed call can be: "banned" (HTTP 403/456/429 or an empty body: slow down),
# "network" (refused, reset, timed out inside), "closed" (the server closed the connection),
# "rejected" (bad token, no permission: retrying cannot help), "rate_limited" (a per-minute
# quota: wait and retry), "bad_answer" (an answer the library could not parse), "unavailable"
# (the library cannot be imported or set up), "error" (anything else).
FAILURE_KINDS = ("banned", "network", "closed", "rejected", "rate_limited", "bad_answer", "unavailable", "error")
_SECRET_ENV_PREFIXES = ("SYNCD_", "PG")
_SECRET_ENV = {"DATABASE_URL"}


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


def child_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without what could reach the database or a token, plus syncd's path."""
    source = dict(os.environ if environ is None else environ)
    env = {key: value for key, value in source.items()
           if not key.startswith(_SECRET_ENV_PREFIXES) and key not in _SECRET_ENV}
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, source.get("PYTHONPATH", "")]))
    env["TQDM_DISABLE"] = "1"  # akshare draws progress bars on stderr: the daemon's log
    return env


class LibraryProcess:
    """One child process running `module`'s calls (see child.py); `call` is not reentrant."""

    def __init__(self, module: str, options: dict[str, Any], *, label: str, start_deadline_s: float = 60.0) -> None:
        self.module = module
        self.options = options
        self.label = label
        self.start_deadline_s = start_deadline_s
        self.starts = 0  # child processes started so far (each one a fresh library session)
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._last_used = time.monotonic()

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def idle_s(self) -> float:
        return time.monotonic() - self._last_used

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def call(self, function: str, *args: Any, deadline_s: float, what: str,
             should_stop: Callable[[], bool] | None = None) -> Any:
        """Run `function(*args)` in the child; its answer, or UpstreamFailure / UpstreamTimeout / CallCancelled."""
        with self._lock:
            try:
                if not self.alive:
                    self._start(should_stop)
                return self._exchange(("call", function, args), deadline_s, what, should_stop)
            finally:
                self._last_used = time.monotonic()

    def discard(self) -> None:
        """End the child now (safe from any thread); the next call starts a new one."""
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is not None and process.poll() is None:
            process.kill()
            try:
                process.wait(KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                pass
        if conn is not None:
            conn.close()

    close = discard

    def _start(self, should_stop: Callable[[], bool] | None) -> None:
        self.discard()
        parent_end, child_end = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "syncd.sources.child", str(child_end.fileno())],
                pass_fds=(child_end.fileno(),), env=child_environment(), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, close_fds=True)
        finally:
            child_end.close()
        self._conn = Connection(parent_end.detach())
        self.starts += 1
        try:
            self._exchange(("setup", self.module, self.options), self.start_deadline_s,
                           f"{self.label}: starting the library process", should_stop)
        except BaseException:
            self.discard()  # a child that could not set its library up serves no call
            raise

    def _exchange(self, message: tuple[Any, ...], deadline_s: float, what: str,
                  should_stop: Callable[[], bool] | None) -> Any:
        conn = self._conn
        assert conn is not None
        deadline = time.monotonic() + deadline_s
        try:
            conn.send(message)
            while not conn.poll(min(POLL_S, max(0.0, deadline - time.monotonic()))):
                if should_stop is not None and should_stop():
                    self.discard()
                    raise CallCancelled(f"{what}: cancelled while waiting for the answer")
                if time.monotonic() >= deadline:
                    self.discard()
                    raise UpstreamTimeout(f"{what}: no answer within {deadline_s:g} s (stopped)")
            reply = conn.recv()
        except (EOFError, OSError) as exc:
            code = self._process.poll() if self._process is not None else None
            self.discard()
            raise UpstreamFailure("error", f"{what}: the library process ended ({_exit_text(code, exc)})") from None
        match reply:
            case ("ok", value):
                return value
            case ("error", str(kind), str(text)):
                raise UpstreamFailure(kind, f"{what}: {text}")
        self.discard()
        raise UpstreamFailure("error", f"{what}: unreadable reply from the library process")


def _exit_text(code: int | None, exc: BaseException) -> str:
    if code is None:
        return type(exc).__name__
    return f"killed by signal {-code}" if code < 0 else f"exit status {code}"
