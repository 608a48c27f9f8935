"""What the tests and the benchmarks share: a PostgreSQL to test on, real syncd processes, polling.

Not part of the installed package (syncd and syncctl never import it): `tests/conftest.py`
and `bench/harness.py` import it from the repository root (pytest's `pythonpath = ["."]`;
`python -m bench` runs from the root). It owns:

- `PostgresServer`: $SYNCD_TEST_DSN when set (a role that may CREATE DATABASE), else one
  embedded pgserver in a temporary folder; `fresh_database()` hands out empty databases.
- `SyncdProcess`: a real `python -m syncd` on its own short folder (ipc socket paths are
  limited to ~107 bytes), config written as TOML, waited for by polling `ping`.
- `wait_until`: poll a condition with a deadline (never a sleep as synchronisation).
- `toml_dumps`, `merge`, `query`, `with_dbname`: small helpers around those.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from syncctl import SyncClient, SyncdUnreachable
from syncd.config import resolve_endpoint

REPO = Path(__file__).resolve().parent.parent


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def toml_dumps(data: dict[str, Any], prefix: str = "") -> str:
    """Render a nested dict of str, bool, int, float and lists as config TOML."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    out = (f"[{prefix}]\n" if prefix and lines else "") + "".join(line + "\n" for line in lines)
    for key, value in tables:
        out += toml_dumps(value, f"{prefix}.{key}" if prefix else key)
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` merged in, nested tables key by key."""
    result = dict(base)
    for key, value in extra.items():
        result[key] = merge(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
    return result


def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of one SQL statement on its own autocommit connection."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def with_dbname(dsn: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


class PostgresServer:
    """The server tests and benchmarks use; a context manager. `admin_dsn` may CREATE DATABASE."""

    def __init__(self, prefix: str = "syncd-pg-") -> None:
        self.admin_dsn = ""
        self._prefix = prefix
        self._server: Any = None
        self._folder: str | None = None

    def __enter__(self) -> PostgresServer:
        if os.environ.get("SYNCD_TEST_DSN"):
            self.admin_dsn = os.environ["SYNCD_TEST_DSN"]
            return self
        import logging

        import pgserver

        logging.getLogger("pgserver").setLevel(logging.WARNING)
        self._folder = tempfile.mkdtemp(prefix=self._prefix, dir="/tmp")
        self._server = pgserver.get_server(Path(self._folder), cleanup_mode="delete")
        self.admin_dsn = self._server.get_uri()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.cleanup()
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)

    @property
    def kind(self) -> str:
        return "external ($SYNCD_TEST_DSN)" if self._server is None else "embedded pgserver"

    def version(self) -> str:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            return str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]

    @contextmanager
    def fresh_database(self, prefix: str = "t_") -> Iterator[str]:
        """A new, empty database; its DSN. Dropped (connections and all) afterwards."""
        name = f"{prefix}{secrets.token_hex(6)}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        try:
            yield with_dbname(self.admin_dsn, name)
        finally:
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class SyncdProcess:
    """A real `python -m syncd` process on its own folder, config file and socket.

    `launch` replaces `-m syncd` (the benchmarks' what-ifs); the environment is the caller's
    without SYNCD_DSN / SYNCD_ENDPOINT (the config decides), plus `env`.
    """

    def __init__(self, folder: Path, config: dict[str, Any], env: dict[str, str] | None = None,
                 launch: list[str] | None = None) -> None:
        self.folder = folder
        self.config = config
        self.config_path = folder / "config.toml"
        self.config_path.write_text(toml_dumps(config))
        self.log_path = folder / "syncd.log"
        self.endpoint = resolve_endpoint(config["daemon"]["endpoint"], folder)
        inherited = {k: v for k, v in os.environ.items() if k not in ("SYNCD_DSN", "SYNCD_ENDPOINT")}
        path = os.pathsep.join(filter(None, [str(REPO), inherited.get("PYTHONPATH")]))
        self.env = {**inherited, "PYTHONPATH": path, **(env or {})}
        self.launch = launch or ["-m", "syncd"]
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    @contextmanager
    def in_temp_folder(cls, config: dict[str, Any], launch: list[str] | None = None) -> Iterator[SyncdProcess]:
        """A started daemon in a fresh short folder, stopped and removed afterwards."""
        folder = Path(tempfile.mkdtemp(prefix="sd-", dir="/tmp"))
        process = cls(folder, config, launch=launch)
        try:
            yield process.start()
        finally:
            process.stop()
            shutil.rmtree(folder, ignore_errors=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, *self.launch, "--config", str(self.config_path)],
                                         cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self.proc

    def start(self, timeout: float = 60.0) -> SyncdProcess:
        self.spawn()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        probe = self.client(timeout=0.5)

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"syncd exited with {self.proc.returncode}:\n{self.log_text()[-5000:]}")
            try:
                probe.ping()
                return True
            except SyncdUnreachable:
                return False

        wait_until(answers, timeout, what="syncd to answer ping")

    def reconfigure(self, changes: dict[str, Any]) -> None:
        """Merge `changes` into the config file; they take effect at the next start."""
        self.config = merge(self.config, changes)
        self.config_path.write_text(toml_dumps(self.config))

    def client(self, timeout: float = 5.0) -> SyncClient:
        return SyncClient(self.endpoint, timeout=timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The daemon's JSON log events so far (those named `name`, if given)."""
        out = []
        for line in self.log_text().splitlines():
            if not line.startswith("{") or (name is not None and f'"{name}"' not in line):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if name is None or event.get("event") == name:
                out.append(event)
        return out

    def wait_idle(self, timeout: float = 60.0) -> Any:
        client = self.client()
        return wait_until(lambda: (s := client.status()).state == "idle" and s, timeout, interval=0.05, what="syncd idle")

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
