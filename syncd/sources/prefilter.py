"""Which rows of a day the checks need to judge: a column-wise pre-filter of db/checks.py's rules, in numpy.

db/checks.py judges a written day in SQL, and the rules are its alone. Most rows of a day pass
every check, and which ones surely pass can be told from the row itself: `suspects` flags
every row that might fail a row-local rule (price order, volume, unit, pct_change) or that
moved far enough for a price limit to matter (|pct| over the tightest limit plus its
tolerance); the write path then runs the SQL checks over those rows only (db/checks.py,
`record_findings(codes=...)`), and a day with no suspect costs no checks statement at all.

It must flag a superset of what the SQL finds: the same comparisons on the same float64
values (those on computed values loosened by SLACK), and any row with a NaN (NULL) in a field a rule reads is a
suspect (PostgreSQL orders NaN above every number where numpy's comparisons are false).
tests/test_prefilter.py holds it to that against the SQL on random and edge-case rows. It is
imported where days are encoded (a source's fetch process), never by the control loop.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..db.checks import LIMIT_TOLERANCE, PCT_TOLERANCE

SLACK = 1e-6           # absolute loosening of every threshold compared (prices and percentages)
LIMIT_FLOOR = 5.0      # the tightest daily limit (main-board ST); |pct| above it plus LIMIT_TOLERANCE is judged
FIELDS = ("open", "high", "low", "close", "pre_close", "volume", "amount", "pct_change")


def suspects(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """A boolean mask over the rows: True where the checks could find something (see the module docstring)."""
    open_, high, low, close, pre = (np.asarray(columns[k], dtype=np.float64) for k in ("open", "high", "low", "close", "pre_close"))
    volume = np.asarray(columns["volume"], dtype=np.float64)
    amount = np.asarray(columns["amount"], dtype=np.float64)
    pct_change = np.asarray(columns["pct_change"], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        unknown = np.zeros(len(close), dtype=bool)
        for values in (open_, high, low, close, pre, volume, amount, pct_change):
            unknown |= np.isnan(values)
        unknown |= pre == 0  # NULLIF(pre_close, 0): the SQL leaves such rows unjudged, here they are judged there
        order = (low > high) | (open_ < low) | (open_ > high) | (close < low) | (close > high)  # stored values, no arithmetic
        tolerance = np.maximum(0.01, (high - low) / 100)
        per_share = amount / np.where(volume > 0, volume, 1)
        unit = (volume > 0) & ((per_share < low - tolerance + SLACK) | (per_share > high + tolerance - SLACK))
        implied = (close - pre) / pre * 100
        pct_off = np.abs(pct_change - implied) > PCT_TOLERANCE - SLACK
        limit = np.abs(pct_change) > LIMIT_FLOOR + LIMIT_TOLERANCE - SLACK
        flagged = unknown | order | (volume < 0) | unit | pct_off | limit
    return flagged
