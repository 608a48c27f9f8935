"""The child side of isolation.py: a process that runs one source library's calls and nothing else.

Started by `LibraryProcess` as `python -m syncd.sources.child FD` with one end of a socket
pair on FD. The first message names a calls module (`syncd.sources.<name>_calls`, from a
fixed list) and its options; the module's `setup(options)` prepares the library (transport
timeouts, a relay, a hardened socket) and returns the table of calls that every later message
picks from. Replies are plain Python values (lists, tuples, strings, numbers), never library
objects, so the daemon never imports the library itself.

A call that fails raises `Failure(kind, message)` (or anything else, reported as kind
"error"); the reply carries the kind so the parent can tell a ban from a broken answer.
The process ignores SIGINT (the parent decides when it ends), exits when the socket closes,
and exits within a fraction of a second when its parent dies, whatever the main thread is
stuck in (a watchdog thread checks the parent pid). It never touches the database: it is
started without the SYNCD_* and PG* environment and imports no database driver.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

CALL_MODULES = ("syncd.sources.akshare_calls", "syncd.sources.baostock_calls", "syncd.sources.tushare_calls")
WATCHDOG_INTERVAL_S = 0.2


class Failure(Exception):
    """A call that failed in a known way; `kind` is one of isolation.FAILURE_KINDS."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(WATCHDOG_INTERVAL_S)
        if os.getppid() != parent:
            os._exit(0)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _serve(conn: Connection) -> None:
    calls: dict[str, Callable[..., Any]] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        match message:
            case ("setup", str(module), dict(options)) if module in CALL_MODULES:
                try:
                    calls = dict(importlib.import_module(module).setup(options))
                    conn.send(("ok", None))
                except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
                    conn.send(("error", "unavailable", _describe(exc)))
            case ("call", str(name), tuple(args)) if name in calls:
                try:
                    conn.send(("ok", calls[name](*args)))
                except Failure as exc:
                    conn.send(("error", exc.kind, str(exc)))
                except Exception as exc:  # noqa: BLE001 - library boundary: any failure is a failed call
                    conn.send(("error", "error", _describe(exc)))
            case _:
                conn.send(("error", "error", f"unknown request {message!r:.80}"))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    _serve(Connection(int(args[0])))


if __name__ == "__main__":
    # Run the package's copy of this module, so that Failure raised by the calls modules
    # (imported from syncd.sources.child) is the class _serve catches.
    from .child import main as package_main

    package_main()
