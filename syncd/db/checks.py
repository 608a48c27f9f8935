"""The sanity checks of a written day: what `verify` reports, computed in SQL where the rows are.

This module owns the rules (docs/data.md, "What is checked") and the one statement that
applies them to a day's rows in daily_bars and stores what it finds in bar_findings:

- `price_order`: low <= open, close <= high (and low <= high);
- `volume`: volume >= 0;
- `unit`: amount / volume within [low - t, high + t], t = max(0.01, 1 % of high - low), the
  guard against a source's units or mapping changing (rows with volume 0, or high below low,
  are not judged);
- `pct_change`: pct_change agrees with close and pre_close (within PCT_TOLERANCE points);
- `price_limit`: |pct_change| within the board's daily limit plus LIMIT_TOLERANCE points,
  with the boards' first-days rules and ST (by the stock's name that day, where known).

A NULL field leaves the checks that need it unjudged. Findings never block a write, except
the unit guard's: `unit_guard_error` says when too many of a day's rows fail it. It runs
inside the caller's transaction (the day's write, or `verify` on a day written before
findings existed) and knows nothing of runs or sockets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only in annotations: sources/prefilter.py (a fetch process's) reads the tolerances without psycopg
    import psycopg

    from ..sources.base import Row

UNIT_GUARD_SHARE = 0.01   # more than this share of a day's rows failing `unit`: the day fails
LIMIT_TOLERANCE = 0.5     # percentage points over a price limit before `price_limit` is reported
PCT_TOLERANCE = 0.02      # percentage points between pct_change and (close / pre_close - 1) * 100
FIRST_DAYS_FREE = 5       # sessions without a limit after a listing (STAR; ChiNext and main boards since their reforms)
FIRST_DAYS_SPAN = 20      # calendar days that surely hold a listing's first five sessions (a long holiday included)

CHINEXT_REFORM = dt.date(2020, 8, 24)   # ChiNext's registration system: +/-20 %, five free sessions for listings from here
MAIN_BOARD_REFORM = dt.date(2023, 4, 10)  # main boards' registration system: five free sessions for listings from here
# Main-board ST / *ST stocks move from +/-5 % to +/-10 % on this date: proposed by the SSE and SZSE on 2025-06-27
# ("关于调整主板风险警示股票价格涨跌幅限制比例及有关事项的通知", consultation draft), in force from the session of
# Monday 2026-07-06 (as reported in akfamily/akquant#249 and simonlin1212/TradingAgents-astock#85).
MAIN_BOARD_ST_TEN_PERCENT = dt.date(2026, 7, 6)

CHECKS = ("price_order", "volume", "unit", "pct_change", "price_limit")

# Board by code: STAR 688/689, ChiNext 300/301/302, BSE 43x/83x/87x/88x/920, main boards the rest.
_BOARD = """CASE WHEN b.code ~ '^68[89]' THEN 'STAR' WHEN b.code ~ '^30[012]' THEN 'ChiNext'
                 WHEN b.code ~ '^(4|8|920)' THEN 'BSE' ELSE 'main board' END"""

# Price limits of the rows whose move could break one (|pct| over the tightest limit plus tolerance);
# a NULL `up` means no limit that session. Listing day: stocks.listing_date, else the stock's first stored
# row when that is not on the first day the table holds (a stock there was already trading, as far as we know).
# `session`: sessions since the listing day (stored rows counted, up to FIRST_DAYS_FREE).
_LIMITS = f"""
candidates AS MATERIALIZED (
    SELECT b.trade_date, b.code, b.pct, {_BOARD} AS board, s.listing_date IS NOT NULL AS listing_known,
           coalesce(s.listing_date, CASE WHEN first.day > (SELECT min(trade_date) FROM daily_bars) THEN first.day END) AS listed,
           EXISTS (SELECT 1 FROM stock_names n WHERE n.code = b.code AND b.trade_date BETWEEN n.first_seen AND n.last_seen
                   AND n.name LIKE '%%ST%%') AS st
    FROM bars b
    LEFT JOIN stocks s ON s.code = b.code
    LEFT JOIN LATERAL (SELECT min(f.trade_date) AS day FROM daily_bars f WHERE f.code = b.code) first ON true
    WHERE abs(b.pct) > 5 + {LIMIT_TOLERANCE}
),
sessions AS MATERIALIZED (
    SELECT c.*, CASE WHEN c.listed IS NULL OR c.listed > c.trade_date THEN {FIRST_DAYS_FREE}
                     WHEN c.listing_known AND c.trade_date > c.listed + {FIRST_DAYS_SPAN} THEN {FIRST_DAYS_FREE}
                     ELSE (SELECT count(*) FROM (SELECT 1 FROM daily_bars p WHERE p.code = c.code AND p.trade_date < c.trade_date
                                                 AND p.trade_date >= c.listed LIMIT {FIRST_DAYS_FREE}) x) END AS session
    FROM candidates c
),
limits AS (
    SELECT c.trade_date, c.code, c.board, c.st, c.session,
           CASE WHEN c.board = 'STAR' AND c.session < {FIRST_DAYS_FREE} THEN NULL
                WHEN c.board = 'BSE' AND c.session = 0 THEN NULL
                WHEN c.board = 'BSE' THEN 30
                WHEN c.board = 'STAR' THEN 20
                WHEN c.board = 'ChiNext' AND c.listed >= '{CHINEXT_REFORM}' AND c.session < {FIRST_DAYS_FREE} THEN NULL
                WHEN c.board = 'ChiNext' AND c.trade_date >= '{CHINEXT_REFORM}' THEN 20
                WHEN c.board = 'main board' AND c.listed >= '{MAIN_BOARD_REFORM}' AND c.session < {FIRST_DAYS_FREE} THEN NULL
                WHEN c.session = 0 THEN 44
                WHEN c.st AND (c.board = 'ChiNext' OR c.trade_date < '{MAIN_BOARD_ST_TEN_PERCENT}') THEN 5
                ELSE 10 END AS up,
           CASE WHEN c.session = 0 AND c.board IN ('main board', 'ChiNext') THEN 36 END AS first_day_down
    FROM sessions c
)"""

_TOLERANCE_T = "greatest(0.01, (b.high - b.low) / 100)"
# Each check: the condition a row fails it on (NULL fields make it NULL: not judged), and the finding's detail.
_CHECKS: dict[str, tuple[str, str]] = {
    "price_order": (
        "b.low > b.high OR b.open NOT BETWEEN b.low AND b.high OR b.close NOT BETWEEN b.low AND b.high",
        "CASE WHEN b.low > b.high THEN format('high %%s is below low %%s', b.high, b.low) "
        "ELSE format('open %%s / close %%s outside low %%s .. high %%s', b.open, b.close, b.low, b.high) END"),
    "volume": ("b.volume < 0", "format('volume %%s is negative', b.volume)"),
    "unit": (
        f"b.volume > 0 AND b.low <= b.high AND b.amount / b.volume NOT BETWEEN b.low - {_TOLERANCE_T} AND b.high + {_TOLERANCE_T}",
        "format('amount / volume = %%s outside low %%s .. high %%s: units (lots? thousands of yuan?) or columns mixed up', "
        "round((b.amount / b.volume)::numeric, 4), b.low, b.high)"),
    "pct_change": (
        f"abs(b.pct_change - (b.close - b.pre_close) / NULLIF(b.pre_close, 0) * 100) > {PCT_TOLERANCE}",
        "format('pct_change %%s but close %%s against pre_close %%s is %%s', b.pct_change, b.close, b.pre_close, "
        "round(((b.close - b.pre_close) / b.pre_close * 100)::numeric, 4))"),
    "price_limit": (
        f"l.up IS NOT NULL AND (b.pct > l.up + {LIMIT_TOLERANCE} OR b.pct < -coalesce(l.first_day_down, l.up) - {LIMIT_TOLERANCE})",
        "format('pct_change %%s beyond the %%s limit of +%%s%%%% / -%%s%%%%', round(b.pct::numeric, 2), "
        "l.board || CASE WHEN l.session = 0 THEN ' first-day' WHEN l.st THEN ' ST' ELSE '' END, "
        "l.up, coalesce(l.first_day_down, l.up))"),
}
assert tuple(_CHECKS) == CHECKS

# Rows that fail any check are found with the conditions alone; only those get their findings spelt out.
# `bars` is read twice through the primary key rather than materialized (cheaper for a day's 5,000 rows).
# {only} narrows the rows judged to the codes a pre-filter could not clear (sources/prefilter.py).
_FINDINGS_TEMPLATE = f"""
WITH bars AS NOT MATERIALIZED (
    SELECT b.trade_date, b.code, b.open, b.high, b.low, b.close, b.pre_close, b.volume, b.amount, b.pct_change,
           coalesce(b.pct_change, (b.close - b.pre_close) / NULLIF(b.pre_close, 0) * 100) AS pct
    FROM daily_bars b WHERE b.trade_date = %(day)s{{only}}
),
{_LIMITS},
failing AS MATERIALIZED (
    SELECT b.*, l.board, l.st, l.session, l.up, l.first_day_down
    FROM bars b LEFT JOIN limits l ON l.code = b.code
    WHERE {' OR '.join(f'coalesce({condition}, false)' for condition, _ in _CHECKS.values())}
)
INSERT INTO bar_findings (trade_date, code, check_name, detail)
SELECT b.trade_date, b.code, c.check_name, c.detail
FROM failing b CROSS JOIN LATERAL (SELECT b.board, b.st, b.session, b.up, b.first_day_down) l
CROSS JOIN LATERAL (VALUES {', '.join(f"('{name}', CASE WHEN {condition} THEN {detail} END)"
                                      for name, (condition, detail) in _CHECKS.items())}
) c(check_name, detail)
WHERE c.detail IS NOT NULL
RETURNING check_name"""
_FINDINGS = _FINDINGS_TEMPLATE.replace("{only}", "")
_FINDINGS_OF = _FINDINGS_TEMPLATE.replace("{only}", " AND b.code = ANY(%(codes)s)")
CLEAR_FINDINGS = "DELETE FROM bar_findings WHERE trade_date = %s"


def record_findings(conn: psycopg.Connection[Any], day: dt.date, codes: Collection[str] | None = None) -> list[str]:
    """Replace `day`'s stored findings with the checks' verdict on its rows now; return each finding's check.

    `codes`: judge only these rows, when every other row of the day is known to pass (sources/prefilter.py
    says which rows of a day's payload could fail; the rules applied are these, in SQL, either way).
    Both statements leave in one round trip."""
    if codes is not None and not codes:
        conn.execute(CLEAR_FINDINGS, (day,))
        return []
    with conn.pipeline():
        conn.execute(CLEAR_FINDINGS, (day,))
        if codes is None:
            found = conn.execute(_FINDINGS, {"day": day})
        else:
            found = conn.execute(_FINDINGS_OF, {"day": day, "codes": sorted(codes)})
        return [row[0] for row in found.fetchall()]


def unit_guard_error(day: dt.date, checks: list[str], rows: int) -> str | None:
    """The day's error when more than UNIT_GUARD_SHARE of its rows fail the unit guard, else None."""
    failing = checks.count("unit")
    if rows == 0 or failing <= UNIT_GUARD_SHARE * rows:
        return None
    return (f"unit guard: {failing} of {rows} rows of {day} have amount / volume outside [low, high] "
            f"(more than {UNIT_GUARD_SHARE:.0%}): the source's units or column mapping have changed; nothing of this day "
            "was written (see `syncctl verify` and docs/data.md)")


def fails_unit(row: Row) -> bool:
    """The `unit` rule of _CHECKS on one Row in Python (a NULL field: not judged), for rows judged before they
    are written: a fallback source's stocks (run/fallback.py)."""
    high, low, volume, amount = row[2], row[3], row[6], row[7]
    if high is None or low is None or volume is None or amount is None or volume <= 0 or low > high:
        return False
    tolerance = max(0.01, (high - low) / 100)
    return not low - tolerance <= amount / volume <= high + tolerance


def unit_guard_share_error(failing: int, rows: int, what: str) -> str | None:
    """`what`'s error when more than UNIT_GUARD_SHARE of its `rows` fail the unit rule, else None."""
    if rows == 0 or failing <= UNIT_GUARD_SHARE * rows:
        return None
    return (f"unit guard: {failing} of {rows} rows of {what} have amount / volume outside [low, high] "
            f"(more than {UNIT_GUARD_SHARE:.0%}): its units or column mapping differ; none of them was written")
