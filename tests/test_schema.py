"""database.schema and the privileges syncd needs: a role without CREATE on schema public (the default
since PostgreSQL 15 for roles that do not own it, and on hosted plans) is refused at start (exit 78)
with the missing privilege and the fix; with a schema of its own, every table, view and the
migrations record live there, the run lock's key derives from that schema's daily_bars, and it
works through a transaction pooler (the search_path is applied inside each transaction).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest
from conftest import query, wait_until
from test_fault_startup import EX_CONFIG, assert_refused, config_for, run_syncd
from test_pooler import bouncer, bouncer_factory  # noqa: F401 - fixtures

RANGE = ("2025-10-09", "2025-10-10")
SYNCD_TABLES = ("daily_bars", "stocks", "sync_runs", "sync_days", "syncd_migrations")


def _run(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@pytest.fixture
def role(database: str) -> Iterator[tuple[str, str]]:
    """(name, DSN) of a login role that may connect to the test's database but owns nothing and may not
    CREATE in schema public (revoked explicitly too, whatever the server's version)."""
    name = f"syncd_{secrets.token_hex(4)}"
    dbname = psycopg.conninfo.conninfo_to_dict(database)["dbname"]
    _run(database, f"CREATE ROLE {name} LOGIN", f"GRANT CONNECT ON DATABASE {dbname} TO {name}",
         "REVOKE CREATE ON SCHEMA public FROM PUBLIC", f"REVOKE CREATE ON DATABASE {dbname} FROM PUBLIC")
    yield name, psycopg.conninfo.make_conninfo(database, user=name)
    _run(database, f"REASSIGN OWNED BY {name} TO CURRENT_USER", f"DROP OWNED BY {name}", f"DROP ROLE {name}")


def _tables_in(dsn: str, schema: str) -> set[str]:
    rows = query(dsn, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                      "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v')", schema)
    return {name for (name,) in rows}


def test_a_role_without_create_on_public_is_refused_naming_the_privilege_and_the_fix(role, database, short_tmp):
    name, dsn = role
    line = assert_refused(run_syncd(short_tmp, config_for(dsn)), EX_CONFIG, "database.schema", "CREATE", "schema \"public\"",
                          f"GRANT CREATE ON SCHEMA public TO {name}", "CREATE SCHEMA syncd AUTHORIZATION")
    assert "permission denied" not in line
    assert _tables_in(database, "public") == set()


def test_a_schema_that_does_not_exist_and_may_not_be_created_is_refused(role, database, short_tmp):
    name, dsn = role
    outcome = run_syncd(short_tmp, config_for(dsn, database={"schema": "syncd"}))
    assert_refused(outcome, EX_CONFIG, "database.schema", "schema \"syncd\" does not exist",
                   f"CREATE SCHEMA syncd AUTHORIZATION {name}")


def test_with_a_schema_of_its_own_every_table_view_and_the_migrations_live_there(role, database, syncd_factory):
    name, dsn = role
    _run(database, f"CREATE SCHEMA syncd AUTHORIZATION {name}")
    daemon = syncd_factory({"database": {"dsn": dsn, "schema": "syncd", "compat_view": True}})
    daemon.client().start(*RANGE)
    assert daemon.wait_idle().last_run.status == "succeeded"
    assert set(SYNCD_TABLES) | {"daily_stock_data", "daily_bars_qfq"} <= _tables_in(database, "syncd")
    assert _tables_in(database, "public") == set()
    assert query(database, "SELECT count(*) FROM syncd.daily_bars") == [(2 * 200,)]
    # the product's role finds the compatibility view through its own search_path
    _run(database, f"ALTER ROLE {name} SET search_path = syncd, public")
    assert query(dsn, "SELECT count(*) FROM daily_stock_data") == [(2 * 200,)]


def test_a_missing_schema_is_created_when_the_role_may(database, syncd_factory):
    daemon = syncd_factory({"database": {"schema": "market"}})  # the test's superuser may create it
    daemon.client().start(*RANGE)
    assert daemon.wait_idle().last_run.status == "succeeded"
    assert query(database, "SELECT count(*) FROM market.daily_bars") == [(2 * 200,)]
    assert query(database, "SELECT to_regclass('public.sync_runs')") == [(None,)]


def test_the_run_lock_derives_from_the_schemas_daily_bars(database, syncd_factory):
    """Two daemons on one database, each in its own schema, hold their run locks at once: the key is
    the oid of their own daily_bars, not of another schema's."""
    slow = {"source": {"demo": {"day_delay_s": 0.3}}}
    first = syncd_factory({**slow, "database": {"schema": "one"}}, name="one")
    second = syncd_factory({**slow, "database": {"schema": "two"}}, name="two")
    first.client().start("2025-09-01", "2025-09-30")
    second.client().start("2025-09-01", "2025-09-30")  # not rejected: another daily_bars, another lock
    held = wait_until(lambda: query(database, "SELECT array_agg(objid::oid ORDER BY objid) FROM pg_locks WHERE "
                                              "locktype = 'advisory' AND classid = x'53594E43'::int AND granted "
                                              "HAVING count(*) = 2"), what="both run locks held")
    assert held[0][0] == sorted(oid for (oid,) in query(database, "SELECT 'one.daily_bars'::regclass::oid UNION ALL "
                                                                  "SELECT 'two.daily_bars'::regclass::oid"))
    first.client().cancel()
    second.client().cancel()


def test_a_schema_of_its_own_through_a_transaction_pooler(database, bouncer, syncd_factory):  # noqa: F811
    """The pooler hands server connections around between transactions: the schema still holds in each."""
    daemon = syncd_factory({"database": {"dsn": bouncer.dsn(database), "lock_dsn": database, "schema": "syncd"}})
    daemon.client().start(*RANGE)
    assert daemon.wait_idle().last_run.status == "succeeded"
    assert daemon.client().days(*RANGE)[0].rows == 200
    assert query(database, "SELECT count(*) FROM syncd.daily_bars") == [(2 * 200,)]
    assert _tables_in(database, "public") == set()


def test_a_dsn_search_path_and_a_schema_together_are_refused(database, short_tmp):
    dsn = psycopg.conninfo.make_conninfo(database, options="-c search_path=other")
    assert_refused(run_syncd(short_tmp, config_for(dsn, database={"schema": "syncd"})), EX_CONFIG,
                   "database.schema", "search_path")


@pytest.mark.parametrize("value", ["Syncd", "pg_syncd", "a b", "x" * 64, ""])
def test_a_schema_name_that_is_not_a_plain_identifier_is_refused(short_tmp, database, value):
    assert_refused(run_syncd(short_tmp, config_for(database, database={"schema": value})), EX_CONFIG, "database.schema")


def test_tables_that_belong_to_another_role_are_refused_naming_the_owner(role, database, short_tmp, syncd_factory):
    """A database first written by another role: syncd's role may create, but not alter those tables."""
    name, dsn = role
    first = syncd_factory()  # the test's superuser writes the schema
    first.stop()
    _run(database, f"GRANT CREATE ON SCHEMA public TO {name}")
    line = assert_refused(run_syncd(short_tmp, config_for(dsn)), EX_CONFIG, "database.schema", "daily_bars",
                          f"GRANT {query(database, 'SELECT current_user')[0][0]} TO {name}")
    assert "syncd_migrations" in line
