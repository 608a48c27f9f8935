"""Shared fixtures: a real PostgreSQL, a fresh database per test, and real syncd processes.

PostgreSQL is $SYNCD_TEST_DSN when set, else one embedded pgserver for the whole session;
every test gets its own database in it. `syncd_factory` starts `python -m syncd` on a config
written into a short temporary folder (ipc socket paths are limited to ~107 bytes) and waits
for it by polling `ping` with a deadline; every process is stopped at the end of the test.
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
from pathlib import Path
from typing import Any

import psycopg
import pytest

from syncctl import SyncClient, SyncdUnreachable
from syncd.config import resolve_endpoint, toml_dumps  # noqa: F401 - tests import it from here


def wait_until(condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def query(dsn: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of one SQL statement on its own autocommit connection."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in extra.items():
        result[key] = merge(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
    return result


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    if os.environ.get("SYNCD_TEST_DSN"):
        yield os.environ["SYNCD_TEST_DSN"]
        return
    import pgserver

    folder = tempfile.mkdtemp(prefix="syncd-pg-", dir="/tmp")
    server = pgserver.get_server(Path(folder), cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def database(pg_dsn: str) -> Iterator[str]:
    """A fresh, empty database for one test; its DSN."""
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield _with_dbname(pg_dsn, name)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _with_dbname(dsn: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


BASE_CONFIG: dict[str, Any] = {
    "daemon": {"endpoint": "ipc://syncd.sock", "state_dir": "state"},
    "source": {"name": "demo", "demo": {"stocks": 200, "seed": 7}},
    "schedule": {"enabled": False, "catch_up_on_start": False},
    "sync": {"retries": 1, "retry_backoff_s": 0.0},
    "log": {"format": "json", "level": "info"},
}


class SyncdProcess:
    """A real `python -m syncd` process on its own folder, config and socket."""

    def __init__(self, folder: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.config = config
        self.config_path = folder / "config.toml"
        self.config_path.write_text(toml_dumps(config))
        self.log_path = folder / "syncd.log"
        self.endpoint = resolve_endpoint(config["daemon"]["endpoint"], folder)
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self) -> subprocess.Popen[bytes]:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "syncd", "--config", str(self.config_path)],
                                     cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self.proc

    def start(self, timeout: float = 60.0) -> "SyncdProcess":
        self.spawn()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        probe = self.client(timeout=0.5)

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"syncd exited with {self.proc.returncode}:\n{self.log_text()}")
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
        out = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
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


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="sd-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def syncd_factory(database: str, short_tmp: Path) -> Iterator[Callable[..., SyncdProcess]]:
    """`syncd_factory(config_overrides={...}, start=True)` -> a SyncdProcess on the test's database."""
    made: list[SyncdProcess] = []

    def make(config: dict[str, Any] | None = None, *, start: bool = True, name: str | None = None,
             env: dict[str, str] | None = None) -> SyncdProcess:
        folder = short_tmp / (name or f"d{len(made)}")
        folder.mkdir(exist_ok=True)
        full = merge(merge(BASE_CONFIG, {"database": {"dsn": database}}), config or {})
        process = SyncdProcess(folder, full, env)
        made.append(process)
        return process.start() if start else process

    yield make
    for process in made:
        process.stop()
