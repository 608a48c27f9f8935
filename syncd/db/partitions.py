"""daily_bars' physical layout: one partition per calendar year, each with a code-first index.

Two readers pull the table two ways: a day's cross-section ("top 100 by pct_change on a
day": the primary key (trade_date, code), the heap in day order) and one stock's series
(years of one code). And the writer adds a day at a time. A year being written has
`daily_bars_yYYYY_code_date (code, trade_date)`: one stock's rows in date order, what the
lookups of the write path and of the views (a stock's previous or latest row) walk. A
closed year is rewritten once by compaction.py: stored by stock, its indexes packed full. Each year's partition starts with small indexes, so a day costs the same in
the twentieth year as in the first (docs/performance.md, "The layout"). The contract's
columns and primary key are unchanged; the readers query `daily_bars` (the partitioned
parent) and its views as before. The parent has no code index of its own: partitions
carry the one their state needs.

This module owns the DDL: `convert` (migration 5 in migrations.MIGRATIONS: a plain daily_bars
becomes the partitioned one, every row copied, its privileges and syncd's views carried
over, refusing to drop objects of the user's that depend on it), `narrow_code_index`
(migration 7: the covering index of the earlier layout becomes a plain one on each
partition) and `ensure_year` (a year's partition, created before its first day is written:
CREATE TABLE, then ATTACH, which takes only SHARE UPDATE EXCLUSIVE on daily_bars, so
readers never wait for it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg

from . import views
from .sqlrow import one, scalar

VALUE_COLUMNS = ("open", "high", "low", "close", "pre_close", "volume", "amount", "turnover", "pct_change", "adj_factor")
COLUMNS_SQL = """trade_date date NOT NULL, code text NOT NULL, open double precision, high double precision,
    low double precision, close double precision, pre_close double precision, volume bigint, amount double precision,
    turnover double precision, pct_change double precision, adj_factor double precision"""
_ALL = "trade_date, code, " + ", ".join(VALUE_COLUMNS)
CODE_INDEX = "(code, trade_date)"  # every year's, packed full once the year is compacted (compaction.py)
_COVERING = "daily_bars_code_date"  # the earlier layout's index on the parent, covering every column (migrations 5, 6)
SYNCD_VIEWS = ("daily_stock_data", "daily_bars_qfq", "daily_bars_hfq")  # dependents syncd owns (views.py)


class LayoutError(Exception):
    """daily_bars cannot be converted as it stands; the message says why and what to do."""


def partition_name(year: int) -> str:
    return f"daily_bars_y{year}"


def is_partitioned(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass('daily_bars')").fetchone()
    return row is not None and row[0] == "p"


def ensure_year(conn: psycopg.Connection[Any], year: int) -> bool:
    """Create `year`'s partition (with its indexes, named after it) if it is missing; True if it was created.
    In the caller's transaction if there is one, else in a short one of its own."""
    name = partition_name(year)
    if scalar(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,))):
        _ensure_code_index(conn, name)
        return False
    first, after = dt.date(year, 1, 1), dt.date(year + 1, 1, 1)
    with conn.transaction():
        schema = scalar(conn.execute("SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = 'daily_bars'::regclass"))
        conn.execute(f"CREATE TABLE {schema}.{name} ({COLUMNS_SQL})")
        # The bound as a CHECK first: ATTACH then trusts it instead of scanning (the table is empty anyway).
        conn.execute(f"ALTER TABLE {schema}.{name} ADD CONSTRAINT {name}_year "
                     f"CHECK (trade_date >= '{first}' AND trade_date < '{after}')")
        conn.execute(f"ALTER TABLE {schema}.{name} ADD CONSTRAINT {name}_pkey PRIMARY KEY (trade_date, code)")
        conn.execute(f"CREATE INDEX {name}_code_date ON {schema}.{name} {CODE_INDEX}")
        conn.execute(f"ALTER TABLE daily_bars ATTACH PARTITION {schema}.{name} FOR VALUES FROM ('{first}') TO ('{after}')")
    return True


def _ensure_code_index(conn: psycopg.Connection[Any], name: str) -> None:
    """A partition made by hand (CREATE TABLE ... PARTITION OF daily_bars) gets the code index syncd's have."""
    if not scalar(conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = i.indkey[0] WHERE i.indrelid = %s::regclass AND a.attname = 'code')", (name,))):
        return
    schema = scalar(conn.execute("SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = %s::regclass", (name,)))
    conn.execute(f"CREATE INDEX IF NOT EXISTS {name}_code_date ON {schema}.{name} {CODE_INDEX}")


def partitions_of(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """(schema, name) of daily_bars' partitions (syncd's are daily_bars_yYYYY; one made by hand may be named otherwise)."""
    return [(schema, name) for schema, name in conn.execute(
        "SELECT c.relnamespace::regnamespace::text, c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'daily_bars'::regclass ORDER BY c.relname").fetchall()]


def narrow_code_index(conn: psycopg.Connection[Any]) -> None:
    """Migration 7, in migrate()'s transaction: the covering code index (the row a second time, ~200 bytes of a
    stored bar's ~360) becomes a plain `(code, trade_date)` index on each partition. The new indexes are built
    first (SHARE locks: readers go on, through the old index), then the old one goes in a moment."""
    covering = conn.execute("SELECT 1 FROM pg_class WHERE oid = to_regclass(%s) AND relkind = 'I'", (_COVERING,)).fetchone()
    if covering is None:
        return
    conn.execute("SELECT set_config('maintenance_work_mem', '256MB', true)")  # each build's sort in memory
    parts = partitions_of(conn)
    for schema, name in parts:
        conn.execute(f"CREATE INDEX {name}_code_narrow ON {schema}.{name} {CODE_INDEX}")
    conn.execute(f"DROP INDEX {_COVERING}")  # with each partition's share of it
    for schema, name in parts:
        conn.execute(f"ALTER INDEX {schema}.{name}_code_narrow RENAME TO {name}_code_date")


def ensure_years(conn: psycopg.Connection[Any], days: Any) -> list[int]:
    """The partitions for every year of `days` (dates); the years created."""
    return [year for year in sorted({day.year for day in days}) if ensure_year(conn, year)]


def convert(conn: psycopg.Connection[Any]) -> None:
    """Migration 5, in migrate()'s transaction: a plain daily_bars becomes the partitioned one, every row intact.

    The rows are copied into yearly partitions that have no index yet, then the primary key and the
    code index are built partition by partition (a sorted build, far quicker than row by row). The
    table's privileges are granted again on the new one, and syncd's views over it (daily_bars_hfq,
    daily_bars_qfq, daily_stock_data) are dropped and created again as they were. Objects of the user's
    that depend on daily_bars stop the migration, named: syncd never drops them (no CASCADE)."""
    if is_partitioned(conn) or scalar(conn.execute("SELECT to_regclass('daily_bars') IS NULL")):
        return
    blockers = _user_dependents(conn)
    if blockers:
        raise LayoutError(
            "daily_bars becomes a table partitioned by year in this version (docs/performance.md), but these objects "
            f"depend on it: {', '.join(blockers)}. Drop them, start syncd once (the migration runs), and create them "
            "again: they work unchanged on the new daily_bars. syncd never drops objects of yours (no CASCADE)")
    saved_views = {name: definition for name, definition in conn.execute(
        "SELECT c.relname, pg_get_viewdef(c.oid) FROM pg_class c WHERE c.relkind = 'v' AND c.oid = ANY(%s::regclass[])",
        ([v for v in SYNCD_VIEWS if scalar(conn.execute("SELECT to_regclass(%s)", (v,)))],)).fetchall()}
    kept = _Kept.of(conn, "daily_bars")
    for name in SYNCD_VIEWS:  # dependents first
        if name in saved_views:
            conn.execute(f"DROP VIEW {name}")
    schema = scalar(conn.execute("SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = 'daily_bars'::regclass"))
    conn.execute("ALTER TABLE daily_bars RENAME TO daily_bars_unpartitioned")
    conn.execute("ALTER TABLE daily_bars_unpartitioned RENAME CONSTRAINT daily_bars_pkey TO daily_bars_unpartitioned_pkey")
    conn.execute("DROP INDEX IF EXISTS daily_bars_code_date")
    conn.execute(f"CREATE TABLE {schema}.daily_bars ({COLUMNS_SQL}) PARTITION BY RANGE (trade_date)")
    first, last = one(conn.execute("SELECT min(trade_date), max(trade_date) FROM daily_bars_unpartitioned"))
    years = range(first.year, last.year + 1) if first is not None else range(0)
    for year in years:
        name = partition_name(year)
        conn.execute(f"CREATE TABLE {schema}.{name} PARTITION OF daily_bars "
                     f"FOR VALUES FROM ('{dt.date(year, 1, 1)}') TO ('{dt.date(year + 1, 1, 1)}')")
    conn.execute(f"INSERT INTO daily_bars ({_ALL}) SELECT {_ALL} FROM daily_bars_unpartitioned")
    for year in years:  # each partition's indexes under the names ensure_year gives them, then the parent's over them
        name = partition_name(year)
        conn.execute(f"ALTER TABLE {schema}.{name} ADD CONSTRAINT {name}_pkey PRIMARY KEY (trade_date, code)")
        conn.execute(f"CREATE INDEX {name}_code_date ON {schema}.{name} {CODE_INDEX}")
    conn.execute("ALTER TABLE daily_bars ADD CONSTRAINT daily_bars_pkey PRIMARY KEY (trade_date, code)")
    conn.execute("DROP TABLE daily_bars_unpartitioned")
    kept.apply(conn, "daily_bars")
    conn.execute(views.ADJUSTED_VIEWS)
    if "daily_stock_data" in saved_views:  # as it was (ensure_compat_view, when configured, brings it up to date next)
        conn.execute(f"CREATE VIEW daily_stock_data AS {saved_views['daily_stock_data']}")
    conn.execute("ANALYZE daily_bars")


@dataclass(frozen=True)
class _Kept:
    """What a table's replacement must have again: its owner, comment and grants (PUBLIC's included)."""

    owner: str
    comment: str | None
    grants: list[tuple[str, str, bool]]  # (grantee or PUBLIC, privilege, grantable)

    @classmethod
    def of(cls, conn: psycopg.Connection[Any], table: str) -> _Kept:
        owner, comment = one(conn.execute("SELECT relowner::regrole::text, obj_description(oid, 'pg_class') FROM pg_class "
                                          "WHERE oid = %s::regclass", (table,)))
        grants = conn.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, a.privilege_type, a.is_grantable "
            "FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = %s::regclass AND a.grantee <> c.relowner",
            (table,)).fetchall()
        return cls(owner, comment, [(grantee, privilege, bool(grantable)) for grantee, privilege, grantable in grants])

    def apply(self, conn: psycopg.Connection[Any], table: str) -> None:
        if self.owner != scalar(conn.execute("SELECT current_user::regrole::text")):
            conn.execute(f"ALTER TABLE {table} OWNER TO {self.owner}")
        if self.comment is not None:
            conn.execute("SELECT set_config('syncd.comment', %s, true)", (self.comment,))
            conn.execute(f"DO $$ BEGIN EXECUTE format('COMMENT ON TABLE {table} IS %L', current_setting('syncd.comment')); END $$")
        for grantee, privilege, grantable in self.grants:
            conn.execute(f"GRANT {privilege} ON {table} TO {grantee}{' WITH GRANT OPTION' if grantable else ''}")


def carry_over(conn: psycopg.Connection[Any], table: str, replacement: str) -> None:
    """`replacement` gets `table`'s owner, comment and grants (a partition compacted, compaction.py)."""
    _Kept.of(conn, table).apply(conn, replacement)


def _user_dependents(conn: psycopg.Connection[Any]) -> list[str]:
    """What of the user's would not survive the old table: objects that depend on daily_bars (views, foreign
    keys, functions...) other than syncd's own views, and what is attached to it (triggers, rules, policies,
    extended statistics, publications) and would go with it. Named as PostgreSQL describes them."""
    rows = conn.execute("""
        SELECT coalesce(r.ev_class::regclass::text, pg_describe_object(d.classid, d.objid, d.objsubid))
        FROM pg_depend d
        LEFT JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
        WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = 'daily_bars'::regclass
          AND (d.deptype = 'n' AND r.ev_class IS DISTINCT FROM 'daily_bars'::regclass
               OR d.classid IN ('pg_trigger'::regclass, 'pg_policy'::regclass, 'pg_statistic_ext'::regclass,
                                'pg_publication_rel'::regclass)
               OR (d.classid = 'pg_rewrite'::regclass AND r.ev_class = 'daily_bars'::regclass))
        UNION
        SELECT pg_describe_object('pg_trigger'::regclass, t.oid, 0) FROM pg_trigger t
        WHERE t.tgrelid = 'daily_bars'::regclass AND NOT t.tgisinternal
        ORDER BY 1""").fetchall()
    return [name for (name,) in rows if name not in SYNCD_VIEWS]
