"""`syncd --config PATH` (also `python -m syncd`): parse arguments, load config, run the daemon;
`syncd --check-config PATH` validates and prints a config instead (checkconfig.py).

Owns only the process edge: a start-up failure becomes exactly one line on stderr,
`syncd: <what is wrong, naming the key or path>`, and a non-zero exit code, never a traceback
and never the database password. 78 (EX_CONFIG) is for what only an operator can fix: a bad
config or DSN (malformed, unknown database or role, refused credentials), a role without the
privileges syncd needs in its schema (db/privileges.py), an unusable
state_dir or socket path, another syncd already running, a missing source extra; systemd's
RestartPreventExitStatus=78 keeps those from restart loops. 1 is for anything else, notably a
database that is unreachable or not yet accepting connections: systemd retries those.
Ctrl-C before the daemon handles signals itself exits 130.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import re
import sys

from . import __version__
from .config import Config, ConfigError, load_config, redact_dsn, scrub

EXIT_CONFIG = 78
EXIT_INTERRUPTED = 130

# libpq's words (English server messages) for a server that answered but refused this DSN.
# A server speaking another language, or a transient refusal ("the database system is
# starting up", "too many clients"), falls through to exit code 1: retrying is the safe side.
_DSN_REFUSED = re.compile(
    r'database "[^"]*" does not exist|role "[^"]*" does not exist|authentication failed|'
    r"no pg_hba\.conf entry|no password supplied|permission denied for database|"
    r"server does not support SSL", re.IGNORECASE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="syncd", description="Sync daily China A-share bars into PostgreSQL, one run at a time.")
    parser.add_argument("--config", metavar="PATH", help="config.toml (default: ./config.toml if present, else built-in defaults)")
    parser.add_argument("--check-config", metavar="PATH",
                        help="validate PATH as a start would and print it resolved (secrets masked); exit 0, or 78 "
                             "naming the key; starts nothing (no database, no socket, no lock)")
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    args = parser.parse_args(argv)
    if args.check_config is not None:
        return check_config(args.check_config)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))

    faulthandler.enable()  # a watchdog SIGABRT then dumps every thread's stack to the journal
    _without_rich()
    from .daemon import Daemon  # imported after config so `syncd --help` stays fast
    from .logs import configure_logging

    configure_logging(config.log.format, config.log.level)
    try:
        return Daemon(config).run()
    except KeyboardInterrupt:  # Ctrl-C before the loop's own signal handling is installed
        return _fail(EXIT_INTERRUPTED, "interrupted during start-up")
    except Exception as exc:  # the process edge
        code, message = failure(exc, config)
        return _fail(code, scrub(message, config.database.dsn, config.database.lock_dsn))


def check_config(path: str) -> int:
    """`syncd --check-config PATH`: 0 and the resolved config on stdout, or 78 and one line on stderr."""
    from .checkconfig import check, render
    from .sources import SourceUnavailable

    try:
        config = load_config(path)
        check(config, os.environ)
    except (ConfigError, SourceUnavailable) as exc:
        return _fail(EXIT_CONFIG, str(exc))
    print(render(config), end="", flush=True)
    return 0


def _without_rich() -> None:
    """structlog imports rich (and pygments) when they are installed (syncctl's dependency): ~3 MB of the
    daemon's memory that it never uses (its console logs use plain tracebacks). Unless something in this
    process already imported it, the daemon goes without (docs/performance.md, the memory budget)."""
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]  # None: "import rich" raises ImportError


def failure(exc: Exception, config: Config) -> tuple[int, str]:
    """The exit code and the message for an exception that ended the daemon."""
    import psycopg

    from .db.migrations import StoreError
    from .db.poolercheck import LockConnectFailed
    from .embedded import EmbeddedDatabaseError
    from .instance import AlreadyRunning
    from .sources import SourceUnavailable

    if isinstance(exc, (ConfigError, AlreadyRunning, SourceUnavailable)):
        return EXIT_CONFIG, str(exc)
    if isinstance(exc, (EmbeddedDatabaseError, StoreError)):
        return 1, str(exc)
    if isinstance(exc, LockConnectFailed):  # the run lock's own DSN: name it, not database.dsn
        return _connect_failure(exc.cause, config, "SYNCD_LOCK_DSN" if os.environ.get("SYNCD_LOCK_DSN") else exc.key, exc.dsn)
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):  # a grant only an operator can give
        return EXIT_CONFIG, (f"the database refused syncd's role: {str(exc).strip()} (the privileges syncd needs: "
                             "docs/operations.md, \"Database privileges\")")
    if isinstance(exc, psycopg.OperationalError):
        return _connect_failure(exc, config, "SYNCD_DSN" if os.environ.get("SYNCD_DSN") else "database.dsn", config.database.dsn)
    return 1, f"failed: {type(exc).__name__}: {exc}"


def _connect_failure(exc: Exception, config: Config, key: str, dsn: str) -> tuple[int, str]:
    """A connection to `key`'s DSN failed: refused (an operator must fix it, 78) or unreachable (retry, 1)."""
    import psycopg

    detail = str(exc).strip()
    if isinstance(exc, psycopg.errors.ConnectionTimeout):
        timeout = config.database.connect_timeout_s
        detail += f" after {timeout:g} s per host (database.connect_timeout_s{'; libpq waits at least 2 s' if timeout < 2 else ''})"
    where = redact_dsn(dsn)
    if _DSN_REFUSED.search(detail):
        return EXIT_CONFIG, f"{key}: the database refused the connection ({where}): {detail}"
    return 1, f"cannot connect to the database ({where}): {detail}"


def _fail(code: int, message: str) -> int:
    print(f"syncd: {' '.join(message.split())}", file=sys.stderr, flush=True)  # one line, whatever libpq wrote
    return code


if __name__ == "__main__":
    sys.exit(main())
