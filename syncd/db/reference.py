"""Reference data from a source: its trading calendar (`trade_calendar`) and its stock list (`stocks`, `stock_names`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import psycopg

from ..sources.base import StockInfo
from .daywrite import Fence


def save_calendar(conn: psycopg.Connection[Any], start: dt.date, end: dt.date, open_days: Sequence[dt.date], source: str,
                  fence: Fence | None = None) -> None:
    """Store a source's authoritative calendar for [start, end]: every day open or closed."""
    open_set = set(open_days)
    values = [(start + dt.timedelta(days=i), (start + dt.timedelta(days=i)) in open_set, source)
              for i in range((end - start).days + 1)]
    with conn.transaction(), conn.cursor() as cur:
        if fence is not None:
            fence(conn)
        cur.executemany("INSERT INTO trade_calendar (date, is_open, source) VALUES (%s, %s, %s) ON CONFLICT (date) "
                        "DO UPDATE SET is_open = EXCLUDED.is_open, source = EXCLUDED.source, updated_at = now()", values)


def load_calendar(conn: psycopg.Connection[Any]) -> dict[dt.date, bool]:
    return dict(conn.execute("SELECT date, is_open FROM trade_calendar").fetchall())


def save_stocks(conn: psycopg.Connection[Any], stocks: Sequence[StockInfo], seen_on: dt.date | None = None,
                fence: Fence | None = None) -> None:
    """Upsert the stock list: COPY into a temporary table, then one INSERT ... ON CONFLICT. Each name is also
    recorded as the stock's name on `seen_on` (default: today in the session's time zone) in stock_names,
    where the checks learn which days a stock carried ST (a known listing date is kept when a later list lacks it)."""
    with conn.transaction(), conn.cursor() as cur:
        if fence is not None:
            fence(conn)
        cur.execute("CREATE TEMPORARY TABLE incoming_stocks (code text, name text, exchange text, listing_date date) "
                    "ON COMMIT DROP")
        with cur.copy("COPY incoming_stocks (code, name, exchange, listing_date) FROM STDIN") as copy:
            for stock in stocks:
                copy.write_row((stock.code, stock.name, stock.exchange, stock.listing_date))
        cur.execute("INSERT INTO stocks (code, name, exchange, listing_date) "
                    "SELECT DISTINCT ON (code) code, name, exchange, listing_date FROM incoming_stocks "
                    "ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, exchange = EXCLUDED.exchange, "
                    "listing_date = coalesce(EXCLUDED.listing_date, stocks.listing_date), updated_at = now()")
        _record_names(cur, seen_on)


def _record_names(cur: psycopg.Cursor[Any], seen_on: dt.date | None) -> None:
    """Extend each stock's latest name record to `seen_on` when the name is unchanged, else start a new one."""
    cur.execute("CREATE TEMPORARY TABLE seen_names ON COMMIT DROP AS "
                "SELECT DISTINCT ON (i.code) i.code, i.name, coalesce(%s::date, current_date) AS seen, n.name AS last_name, "
                "n.first_seen, n.last_seen FROM incoming_stocks i LEFT JOIN LATERAL (SELECT * FROM stock_names x "
                "WHERE x.code = i.code ORDER BY x.first_seen DESC LIMIT 1) n ON true WHERE i.name IS NOT NULL", (seen_on,))
    cur.execute("UPDATE stock_names n SET last_seen = greatest(n.last_seen, s.seen) FROM seen_names s "
                "WHERE n.code = s.code AND n.first_seen = s.first_seen AND s.last_name = s.name")
    cur.execute("INSERT INTO stock_names (code, name, first_seen, last_seen) SELECT code, name, seen, seen FROM seen_names "
                "WHERE last_name IS DISTINCT FROM name "
                "ON CONFLICT (code, first_seen) DO UPDATE SET name = EXCLUDED.name")
