"""The embedded PostgreSQL default: a pgserver instance under state_dir, started and stopped by syncd.

Used only when database.dsn is empty, so a newcomer needs nothing installed. pgserver reuses a
server already running on the same data directory (after a SIGKILL of syncd the postmaster
survives and is adopted), and stops it when the last process using it exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any


class EmbeddedDatabaseError(Exception):
    pass


class EmbeddedPostgres:
    """Owns one pgserver handle; `dsn` is a unix-socket URI that carries no password."""

    def __init__(self, state_dir: str) -> None:
        self.pgdata = Path(state_dir) / "pgdata"
        self._server: Any = None

    def start(self) -> str:
        logging.getLogger("pgserver").setLevel(logging.WARNING)  # its INFO chatter is not ours to print
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")  # platformdirs' note via pgserver
        try:
            import pgserver
        except ImportError:
            raise EmbeddedDatabaseError("the embedded database needs pgserver: pip install pgserver "
                                        "(or set database.dsn to an existing PostgreSQL)") from None
        self.pgdata.mkdir(parents=True, exist_ok=True)
        try:
            self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        except Exception as exc:  # pgserver raises CalledProcessError, TimeoutExpired, AssertionError...
            log = self.pgdata / "log"
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            detail = " | ".join(line.strip() for line in tail)  # one line: the caller prints it as such
            raise EmbeddedDatabaseError(f"embedded PostgreSQL in {self.pgdata} failed to start: {exc!r}"
                                        + (f"; its log ends: {detail}" if detail else "")) from None
        return self._server.get_uri()

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
