"""Child side of the baostock source (runs in child.py's process): one baostock session, hardened.

baostock talks to its server over one plain TCP socket that it creates in `login()` with no
timeout, and its `send_msg` reads until it sees its terminator: an empty read (the server
closed the connection, fully or half) never ends that loop, and every socket error is
swallowed and printed. `setup` therefore gives the library sockets of our own making:
every operation has a timeout (from connect on, so `login()` cannot hang), an empty read
raises ConnectionError ("closed by the server"), and the first error of each call is kept,
so a call whose connection broke fails with that cause even when the library reports
success (its paging stops silently on a broken page). `server` = "host:port" points the
library at another server (baostock's VIP server, the tests' local one).

The session lives as long as this process: `query` logs in on first use; the parent ends
the process after any failure, at the end of each fetch and when it sat idle, so every run
and every retry after an error logs in afresh.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from .child import Failure

NETWORK_ERRORS = "10002"  # baostock's 10002xxx codes: socket errors of every kind


class GuardedSocket(socket.socket):
    """A socket whose empty read is an error, and whose first error is remembered for the call."""

    guard: SocketGuard

    def recv(self, size: int, flags: int = 0) -> bytes:
        try:
            data = super().recv(size, flags)
        except OSError as exc:
            self.guard.note(exc)
            raise
        if not data:
            error = ConnectionError("the server closed the connection (empty read)")
            self.guard.note(error)
            raise error
        return data

    def send(self, data: Any, flags: int = 0) -> int:
        try:
            return super().send(data, flags)
        except OSError as exc:
            self.guard.note(exc)
            raise

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except OSError as exc:
            self.guard.note(exc)
            raise


class SocketGuard:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.error: BaseException | None = None

    def note(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc

    def make(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM, *args: Any) -> GuardedSocket:
        sock = GuardedSocket(family, kind, *args)
        sock.guard = self
        sock.settimeout(self.timeout_s)
        return sock

    def failure(self, what: str) -> Failure | None:
        if self.error is None:
            return None
        error, self.error = self.error, None
        if isinstance(error, TimeoutError | socket.timeout):
            return Failure("network", f"{what}: no answer within {self.timeout_s:g} s (socket timeout)")
        kind = "closed" if isinstance(error, ConnectionError) else "network"
        return Failure(kind, f"{what}: {type(error).__name__}: {error}")


class Session:
    def __init__(self, bs: Any, guard: SocketGuard) -> None:
        self.bs = bs
        self.guard = guard
        self.logged_in = False

    def query(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
        """One library query, drained (next() pages on its own): (fields, rows of strings)."""
        self._login()
        self.guard.error = None
        result = getattr(self.bs, method)(*args, **kwargs)
        rows: list[list[str]] = []
        while result is not None and result.error_code == "0" and result.next():
            rows.append(list(result.get_row_data()))
        self._raise_if_failed(result, method)
        return list(result.fields), rows

    def logout(self) -> None:
        if self.logged_in:
            self.logged_in = False
            self.bs.logout()

    def _login(self) -> None:
        if self.logged_in:
            return
        self.guard.error = None
        self._raise_if_failed(self.bs.login(), "login")
        self.logged_in = True

    def _raise_if_failed(self, result: Any, what: str) -> None:
        broken = self.guard.failure(what)
        if broken is not None:
            raise broken
        if result is None:
            raise Failure("error", f"{what}: the library returned nothing (bad arguments?)")
        if result.error_code != "0":
            kind = "network" if str(result.error_code).startswith(NETWORK_ERRORS) else "error"
            raise Failure(kind, f"{what}: error {result.error_code}: {result.error_msg}")


def setup(options: dict[str, Any]) -> dict[str, Callable[..., Any]]:
    import baostock
    import baostock.common.contants as constants
    import baostock.util.socketutil as socketutil

    guard = SocketGuard(float(options["request_timeout_s"]))
    # socketutil reaches sockets through its module global `socket`: give it ours.
    socketutil.socket = SimpleNamespace(socket=guard.make, AF_INET=socket.AF_INET,
                                        SOCK_STREAM=socket.SOCK_STREAM)
    server = str(options.get("server", ""))
    if server:
        host, _, port = server.rpartition(":")
        constants.BAOSTOCK_SERVER_IP = constants.BAOSTOCK_VIP_SERVER_IP = host
        constants.BAOSTOCK_SERVER_PORT = int(port)
    session = Session(baostock, guard)
    return {"query": session.query, "logout": session.logout}
