"""What syncd's database role must be allowed, checked at start before anything is created.

syncd creates its tables, views, yearly partitions and migrations record in one schema
(`database.schema`; by default `public`, or whatever the DSN's search_path puts first) and
alters them as migrations arrive, so its role needs USAGE and CREATE on that schema and must
own the tables it made (docs/operations.md, "Database privileges"). Since PostgreSQL 15 only
the database owner may CREATE in `public`, and hosted plans often hand out roles without it:
that is refused here with a ConfigError (exit 78) naming the privilege and the two fixes,
instead of a `permission denied` from the first CREATE TABLE. A configured schema that does
not exist is created when the role may (CREATE on the database), else refused the same way.
Read-only apart from that one CREATE SCHEMA; it never grants anything.
"""

from __future__ import annotations

from typing import Any

import psycopg
import psycopg.sql

from ..config import ConfigError
from .sqlrow import one, scalar

KEY = "database.schema"
# The relations syncd creates and later alters (a migration, a new year's partition of daily_bars).
OWNED = ("syncd_migrations", "daily_bars", "stocks", "sync_runs", "sync_days", "trade_calendar", "stock_names",
         "sync_day_missing", "bar_findings", "sync_stage")


def check_schema(conn: psycopg.Connection[Any], schema: str | None) -> str:
    """Make sure syncd may create and alter its objects where they go; return that schema's name.

    `schema`: database.schema when set to other than the default (it is then the whole search_path),
    None to check wherever the search_path creates (the default `public`, or the DSN's own)."""
    role, database, may_create_schema = one(conn.execute(
        "SELECT current_user, current_database(), has_database_privilege(current_database(), 'CREATE')"))
    if schema is not None and not _exists(conn, schema):
        if not may_create_schema:
            raise ConfigError(f"{KEY}: schema \"{schema}\" does not exist and role \"{role}\" may not create it (no CREATE "
                              f"privilege on database \"{database}\"); as the database's owner run: CREATE SCHEMA {schema} "
                              f"AUTHORIZATION {role} (docs/operations.md, \"Database privileges\")")
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(psycopg.sql.Identifier(schema)))
    target = scalar(conn.execute("SELECT current_schema()"))
    if target is None:  # nothing on the search_path exists (or the role may not use it)
        raise ConfigError(f"{KEY}: no schema on the search_path exists that role \"{role}\" may use; set database.schema "
                          f"to a schema of syncd's own (as the database's owner: CREATE SCHEMA syncd AUTHORIZATION {role})")
    if not scalar(conn.execute("SELECT has_schema_privilege(current_schema(), 'CREATE')")):
        raise ConfigError(
            f"{KEY}: role \"{role}\" lacks the CREATE privilege on schema \"{target}\" (PostgreSQL 15 and later grant it on "
            f"public only to the database's owner), and syncd creates its tables there. Either give syncd a schema of its "
            f"own (as the database's owner: CREATE SCHEMA syncd AUTHORIZATION {role}; then database.schema = \"syncd\"), or "
            f"GRANT CREATE ON SCHEMA {target} TO {role} (docs/operations.md, \"Database privileges\")")
    _check_owned(conn, role, target)
    return str(target)


def _exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    return bool(scalar(conn.execute("SELECT to_regnamespace(%s) IS NOT NULL", (schema,))))


def _check_owned(conn: psycopg.Connection[Any], role: str, schema: str) -> None:
    """syncd's tables there (if made already) must belong to its role (or a role it is a member of)."""
    others = conn.execute(
        "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.relnamespace = to_regnamespace(%s) "
        "AND c.relname = ANY(%s) AND NOT pg_has_role(c.relowner, 'USAGE') ORDER BY c.relname", (schema, list(OWNED))).fetchall()
    if others:
        owner = others[0][1]
        names = ", ".join(name for name, _ in others)
        raise ConfigError(f"{KEY}: {names} in schema \"{schema}\" belong to role \"{owner}\", not to syncd's role \"{role}\", "
                          f"and syncd alters them (migrations, a new year's partition); run syncd as \"{owner}\", or "
                          f"GRANT {owner} TO {role}")
