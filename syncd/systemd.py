"""sd_notify for running under systemd (Type=notify), without a dependency.

This module owns the datagrams syncd sends to the service manager: READY=1 once the control
socket is bound and the database is ready, STATUS= lines with what the daemon is doing,
WATCHDOG=1 keep-alives and STOPPING=1. It reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID
once, from the env mapping it is given, and keeps one unbound AF_UNIX datagram socket for its
life. Without NOTIFY_SOCKET every call is a no-op. It must never raise into the caller and
never block the control loop (sends are MSG_DONTWAIT), and it does not log: each send returns
whether the datagram left, and the caller decides whether that is worth a log line.
See sd_notify(3) and sd_watchdog_enabled(3).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from types import TracebackType


class Notifier:
    """Sends sd_notify datagrams to the socket named by NOTIFY_SOCKET, or does nothing."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        """`address` is NOTIFY_SOCKET as systemd sets it: a path, or `@name` for an abstract
        socket; None disables. `watchdog_usec` is the watchdog timeout meant for this process."""
        self._address = _sockaddr(address)
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        if self._address is not None:
            try:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            except OSError:
                self._sock = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, pid: int | None = None) -> Notifier:
        """Build from the service manager's variables; `pid` (default os.getpid()) is the
        process WATCHDOG_PID must name for the watchdog to be ours."""
        return cls(env.get("NOTIFY_SOCKET") or None, _watchdog_usec(env, os.getpid() if pid is None else pid))

    @property
    def enabled(self) -> bool:
        """True when there is a notify socket to send to."""
        return self._sock is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to call watchdog(): half of WATCHDOG_USEC, in seconds; None when no
        watchdog is expected from this process (as sd_watchdog_enabled(3) recommends)."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` assignments in one datagram; True if it was sent."""
        if self._sock is None or self._address is None or not assignments:
            return False
        try:
            self._sock.sendto("\n".join(assignments).encode(), socket.MSG_DONTWAIT, self._address)
        except (OSError, ValueError):  # receiver gone or full, socket closed, bad text
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """READY=1: startup is finished (socket bound, database ready); optionally a STATUS."""
        return self.notify("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """STATUS=text: one line shown by `systemctl status` (newlines become spaces)."""
        return self.notify(*_status(text))

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: shutdown has begun; optionally a STATUS."""
        return self.notify("STOPPING=1", *_status(status))

    def watchdog(self) -> bool:
        """WATCHDOG=1: the keep-alive; call it every watchdog_interval_s from the loop that
        must stay alive (a hung loop then gets the unit restarted)."""
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        """Close the socket; later sends return False."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _sockaddr(address: str | None) -> str | bytes | None:
    """NOTIFY_SOCKET as a sendto() address; None for unset or kinds we do not speak (vsock:)."""
    if not address:
        return None
    if address.startswith("@"):
        return b"\0" + address[1:].encode()  # Linux abstract namespace
    if address.startswith("/"):
        return address
    return None


def _watchdog_usec(env: Mapping[str, str], pid: int) -> int | None:
    """WATCHDOG_USEC if set, positive and (WATCHDOG_PID unset or equal to `pid`), else None."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
        owner = int(env.get("WATCHDOG_PID") or pid)
    except ValueError:
        return None
    return usec if usec > 0 and owner == pid else None


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    return ("STATUS=" + " ".join(text.splitlines()),)
