"""Shared fixtures: a real PostgreSQL, a fresh database per test, and real syncd processes.

PostgreSQL is $SYNCD_TEST_DSN when set, else one embedded pgserver for the whole session;
every test gets its own database in it. `syncd_factory` starts `python -m syncd` on a config
written into a short temporary folder (ipc socket paths are limited to ~107 bytes) and waits
for it by polling `ping` with a deadline; every process is stopped at the end of the test.
The machinery lives in `testkit/` (shared with the benchmarks); this file makes fixtures of it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit import PostgresServer, SyncdProcess, merge, query, toml_dumps, wait_until  # noqa: F401 - tests import them from here


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def pg_dsn(pg_server: PostgresServer) -> str:
    return pg_server.admin_dsn


@pytest.fixture
def database(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test; its DSN."""
    with pg_server.fresh_database() as dsn:
        yield dsn


BASE_CONFIG: dict[str, Any] = {
    "daemon": {"endpoint": "ipc://syncd.sock", "state_dir": "state"},
    "source": {"name": "demo", "demo": {"stocks": 200, "seed": 7}},
    "schedule": {"enabled": False, "catch_up_on_start": False},
    "sync": {"retries": 1, "retry_backoff_s": 0.0},
    "log": {"format": "json", "level": "info"},
}


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
