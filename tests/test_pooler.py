"""syncd behind a real PgBouncer in transaction mode: it connects, serves and syncs through it.

Debian's PgBouncer 1.18 runs in front of the test PostgreSQL with `ignore_startup_parameters =
extra_float_digits` (a startup `options` parameter is then refused) and a small pool, so
server connections are shared between syncd's connections and other clients.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import query
from pgbouncer import PGBOUNCER, PgBouncer

SYNC_RANGE = ("2025-09-01", "2025-09-30")


@pytest.fixture
def bouncer_factory(pg_dsn: str, database: str, short_tmp: Path) -> Iterator[Callable[..., PgBouncer]]:
    """`bouncer_factory(pool_mode="transaction", pool_size=2)`: a PgBouncer in front of the test server."""
    if PGBOUNCER is None:
        warnings.warn("pgbouncer is not installed: the pooler tests are SKIPPED (apt-get install pgbouncer)")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer); the pooler tests need it")
    started: list[PgBouncer] = []

    def start(pool_mode: str = "transaction", pool_size: int = 2) -> PgBouncer:
        bouncer = PgBouncer.start(pg_dsn, short_tmp / f"pgbouncer{len(started)}", pool_mode=pool_mode, pool_size=pool_size)
        started.append(bouncer)
        return bouncer

    yield start
    for bouncer in started:
        bouncer.stop()


@pytest.fixture
def bouncer(bouncer_factory: Callable[..., PgBouncer]) -> PgBouncer:
    return bouncer_factory()


def test_syncd_syncs_and_answers_history_and_days_through_a_transaction_pooler(bouncer, database, syncd_factory):
    daemon = syncd_factory({"database": {"dsn": bouncer.dsn(database)}})
    client = daemon.client()
    client.start(*SYNC_RANGE)
    last = daemon.wait_idle().last_run
    assert (last.status, last.days_done) == ("succeeded", 22)
    for _ in range(30):  # psycopg prepares a statement after 5 executions: shared server connections then collide
        assert client.history(limit=5)[0].run_id == last.run_id
        assert len(client.days(*SYNC_RANGE)) == 30
    assert query(database, "SELECT count(*) FROM sync_days WHERE status = 'success'") == [(22,)]
    assert "DuplicatePreparedStatement" not in daemon.log_text()
