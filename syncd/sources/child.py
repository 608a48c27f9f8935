"""The child side of isolation.py: a process that runs one source library's calls and nothing else.

Started by `LibraryProcess` through childproc.py (the runner the fetch process uses too),
speaking its wire on two pipes. The first message names a calls module (`syncd.sources.<name>_calls`, from a
fixed list) and its options; the module's `setup(options)` prepares the library (transport
timeouts, a relay, a hardened socket) and returns the table of calls that every later message
picks from. Replies are plain Python values (lists, tuples, strings, numbers), never library
objects, so the daemon never imports the library itself.

A call that fails raises `Failure(kind, message)` (or anything else, reported as kind
"error"); the reply carries the kind so the parent can tell a ban from a broken answer.
The process ignores SIGINT (the parent decides when it ends), exits when its command pipe
closes, and exits within a fraction of a second when its parent process dies, whatever the
main thread is stuck in (childproc.py's watchdog thread; not PR_SET_PDEATHSIG, which would
end it with the stock-ask thread that happened to start it). What a library prints goes to
/dev/null. It never touches the database: it is started without the SYNCD_* and PG*
environment and imports no database driver.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from .childproc import ParentLink

CALL_MODULES = ("syncd.sources.akshare_calls", "syncd.sources.baostock_calls", "syncd.sources.tushare_calls")


class Failure(Exception):
    """A call that failed in a known way; `kind` is one of isolation.FAILURE_KINDS."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _serve(link: ParentLink) -> None:
    calls: dict[str, Callable[..., Any]] = {}
    while (message := link.read()) is not None:
        match message:
            case ["setup", str(module), dict(options)] if module in CALL_MODULES:
                try:
                    calls = dict(importlib.import_module(module).setup(options))
                    link.send(["ok", None])
                except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
                    link.send(["error", "unavailable", _describe(exc)])
            case ["call", str(name), list(args)] if name in calls:
                try:
                    link.send(["ok", calls[name](*args)])
                except Failure as exc:
                    link.send(["error", exc.kind, str(exc)])
                except Exception as exc:  # noqa: BLE001 - library boundary: any failure is a failed call
                    link.send(["error", "error", _describe(exc)])
            case _:
                link.send(["error", "error", f"unknown request {message!r:.80}"])


def main(argv: list[str] | None = None) -> None:
    _serve(ParentLink.attach(sys.argv[1:] if argv is None else argv, prints_to_stderr=False, die_with_thread=False))


if __name__ == "__main__":
    # Run the package's copy of this module, so that Failure raised by the calls modules
    # (imported from syncd.sources.child) is the class _serve catches.
    from .child import main as package_main

    package_main()
