"""`syncd --config PATH` (also `python -m syncd`): parse arguments, load config, run the daemon.

Owns only the process edge: start-up errors become one line on stderr and a non-zero exit
code, never a traceback: 78 (EX_CONFIG) for a bad config or "already running" — systemd's
RestartPreventExitStatus=78 keeps those from restart loops — and 1 for anything else.
"""

from __future__ import annotations

import argparse
import faulthandler
import sys

from . import __version__
from .config import ConfigError, load_config, scrub

EXIT_CONFIG = 78


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="syncd", description="Sync daily China A-share bars into PostgreSQL, one run at a time.")
    parser.add_argument("--config", metavar="PATH", help="config.toml (default: ./config.toml if present, else built-in defaults)")
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_CONFIG

    faulthandler.enable()  # a watchdog SIGABRT then dumps every thread's stack to the journal
    from .daemon import Daemon  # imported after config so `syncd --help` stays fast
    from .embedded import EmbeddedDatabaseError
    from .instance import AlreadyRunning
    from .logs import configure_logging
    from .sources import SourceUnavailable
    from .store import StoreError

    configure_logging(config.log.format, config.log.level)
    try:
        return Daemon(config).run()
    except (ConfigError, AlreadyRunning, SourceUnavailable) as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (EmbeddedDatabaseError, StoreError) as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the process edge: one clear line, the details in the log
        from .logs import get_logger

        message = scrub(str(exc), config.database.dsn)
        get_logger().error("daemon_failed", error=message, error_type=type(exc).__name__)
        print(f"syncd: failed: {type(exc).__name__}: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
