"""Start-up checks that refuse before anything is touched: the ipc socket path and the DSNs' syntax.

`syncd --check-config` runs the same DSN checks (checkconfig.py).

Both end the start with a ConfigError (or AlreadyRunning) naming the key, so the process
edge prints one line and exits 78: an operator must fix them, and a restart would not.
"""

from __future__ import annotations

import os
import re
import socket
import stat
from collections.abc import Mapping

import psycopg

from .config import ConfigError, DatabaseConfig, ipc_path
from .db.connection import OptionsError, dsn_settings
from .instance import AlreadyRunning


def check_dsn(dsn: str, key: str) -> None:
    """Refuse a DSN that libpq cannot parse, with libpq's reason (never a piece of the password), and
    one whose `options` are not `-c name=value` settings (syncd applies them itself: see db/connection.py)."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"{key}: not a valid PostgreSQL connection string: {_mask_secret_fragments(str(exc), dsn)}") from None
    try:
        dsn_settings(dsn)
    except OptionsError as exc:
        raise ConfigError(f"{key if 'options' in info else f'{key} (its options from $PGOPTIONS)'}: {exc}") from None


def check_database(config: DatabaseConfig, env: Mapping[str, str]) -> None:
    """The DSNs' syntax and options, named by where they came from (the config key or its SYNCD_* override);
    lock_dsn only beside dsn; database.schema the only search_path."""
    schema = None if config.schema == "public" else config.schema
    if config.dsn:
        key = "SYNCD_DSN" if env.get("SYNCD_DSN") else "database.dsn"
        check_dsn(config.dsn, key)
        check_schema_alone(config.dsn, key, schema)
    if config.lock_dsn:
        key = "SYNCD_LOCK_DSN" if env.get("SYNCD_LOCK_DSN") else "database.lock_dsn"
        if not config.dsn:
            raise ConfigError(f"{key}: set only with database.dsn (the embedded database has no pooler in front of it)")
        check_dsn(config.lock_dsn, key)
        check_schema_alone(config.lock_dsn, key, schema)


def check_schema_alone(dsn: str, key: str, schema: str | None) -> None:
    """database.schema sets the search_path: refuse a DSN whose options set another one too."""
    if schema is not None and "search_path" in dsn_settings(dsn):
        raise ConfigError(f"database.schema = \"{schema}\" sets the search_path, and {key} sets one in its options too: "
                          "keep one (database.schema, or the DSN's search_path with database.schema left at \"public\")")


def _mask_secret_fragments(detail: str, dsn: str) -> str:
    """libpq quotes the token it choked on, which may be part of a password: mask those."""
    secret = re.search(r"(?i)password\s*=|://[^/@]*:[^@]*@", dsn)
    if secret is None:
        return detail
    tail = dsn[secret.start():]
    return re.sub(r'"([^"]+)"', lambda q: '"***"' if q.group(1) in tail else q.group(0), detail)


def claim_ipc_path(endpoint: str) -> None:
    """Make sure binding an ipc:// endpoint takes nothing from anyone.

    libzmq's ipc bind silently unlinks whatever is at the path: a file, or the socket of a
    live daemon (which then serves no one). So: nothing there, or a stale socket (connect
    refused: its daemon died), is fine and the bind replaces it; anything that is not a
    socket, or a socket someone is listening on, is refused.
    """
    path = ipc_path(endpoint)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"daemon.endpoint: cannot use socket path {path}: {exc.strerror} ({exc.filename})") from None
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"daemon.endpoint: {path} exists and is {_file_kind(mode)}, not a socket; "
                          "syncd will not replace it (remove it or choose another endpoint)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        return  # stale: left by a daemon that died
    except (BlockingIOError, TimeoutError):
        pass  # a full backlog: someone is listening
    except OSError as exc:
        raise ConfigError(f"daemon.endpoint: cannot tell whether socket {path} is in use: {exc.strerror}") from None
    finally:
        probe.close()
    raise AlreadyRunning(f"daemon.endpoint: another process is listening on {path} (another syncd with a "
                         "different state_dir?); syncd will not take it over")


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
             (stat.S_ISFIFO, "a fifo"))
    return next((name for test, name in kinds if test(mode)), "a special file")
