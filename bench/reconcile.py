"""Benchmark 8, reconciliation: what a second opinion costs in requests and time, and what it costs the control loop.

Requests, counted at local servers (tests/upstreams.py, each service's documented shapes
through the real libraries) over a 5,300-stock market: a reconciliation of one day and of
twenty days against each by-day source (Tushare, baostock) in the reconcile thread's
reference mode, next to its request plan and, in the same run, the daily sync's own
conversation with that source (fetchplan.py's drive: calendar, stock list, the day).

Time, end to end in a real daemon on a full-market demo: `days` trading days synced, then
reconciled against the demo (`SyncClient.reconcile`, every stock of every day compared in
SQL); the reconciliation's seconds next to the sync's, and the latency of `status` polled
every 50 ms while the daemon is idle and while it reconciles (the control loop must not wait
on the reconcile thread). Ratios are measured side by side in one run.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

from syncd.config import BaostockConfig, SourceConfig, TushareConfig
from syncd.sources import reference
from syncd.sources.base import DayBatch

from .fetchplan import LAST_DAY, LazyMarket, _drive_and_stop
from .harness import Postgres, Syncd, emit, first_trading_days, note, percentile, print_table, run_to_end, syncd_config

POLL_PERIOD_S = 0.05
SPANS = (1, 20)


def run(pg: Postgres, days: int, stocks: int = 5300) -> dict[str, Any]:
    note(f"reconcile: requests of 1 and 20 days against the by-day sources ({stocks} stocks, local servers); "
         f"{days} full-market demo days synced, then reconciled, status polled every {POLL_PERIOD_S * 1000:.0f} ms")
    result: dict[str, Any] = {"requests": _requests(stocks)}
    result.update(_timing(pg, days))
    result["goal_one_day_by_day_one_or_two_requests"] = all(  # data requests: baostock's login and logout aside
        counted["data_requests_1d"] <= 2 for counted in result["requests"].values())
    return emit("reconcile", result)


# --- requests -----------------------------------------------------------------------------------

def _requests(stocks: int) -> dict[str, dict[str, int]]:
    calendar = [d for d in first_trading_days(LAST_DAY - dt.timedelta(days=40), 40) if d <= LAST_DAY][-max(SPANS):]
    market = LazyMarket(stocks, calendar)
    rows: list[tuple[Any, ...]] = []
    counted: dict[str, dict[str, int]] = {}
    for name in ("tushare", "baostock"):
        entry: dict[str, int] = {"daily_sync": _daily_sync(name, market)}
        for span in SPANS:
            server, config = _server(name, market)
            try:
                planned = reference.plan(config, name, span, 0)
                source = reference.Reference(config, name)
                try:
                    answered = [batch for _, batch in source.fetch_days(calendar[-span:], lambda: False)
                                if isinstance(batch, DayBatch)]
                    made = source.requests
                finally:
                    source.close()
            finally:
                server.stop()
            entry[f"requests_{span}d"] = server.count()
            entry[f"data_requests_{span}d"] = server.count(_data_request)
            rows.append((name, span, len(answered), planned.requests, made, server.count(), server.count(_data_request),
                         entry["daily_sync"], planned.cost))
        counted[name] = entry
    print_table("Reconciliation requests against the by-day sources (counted at the local servers)",
                ("against", "days", "days answered", "planned", "made (source's count)", "at the server",
                 "of them data", "daily sync's own", "plan"), rows)
    return counted


def _data_request(request: Any) -> bool:
    """A request for data: every Tushare request; a baostock message other than login ("00") and logout ("02")."""
    return getattr(request, "kind", None) not in ("00", "02")


def _server(name: str, market: LazyMarket) -> tuple[Any, SourceConfig]:
    from upstreams import BaostockServer, HttpUpstream, tushare_route  # tests/upstreams.py (fetchplan put it on the path)

    if name == "tushare":
        http = HttpUpstream(tushare_route(market, calendar=market.days))
        return http, SourceConfig(tushare=TushareConfig(token="good-token", url=http.url, requests_per_minute=600_000))
    tcp = BaostockServer(market)
    return tcp, SourceConfig(baostock=BaostockConfig(server=tcp.address, requests_per_second=10_000, jitter=0))


def _daily_sync(name: str, market: LazyMarket) -> int:
    """What a daily sync asks the same source (fetchplan's drive: its calendar, a fresh stock list, the day)."""
    server, config = _server(name, market)
    if name == "tushare":
        from syncd.sources.tushare import TushareSource

        _drive_and_stop(TushareSource(config.tushare), server, [market.days[-1]])
    else:
        from syncd.sources.baostock import BaostockSource

        _drive_and_stop(BaostockSource(config.baostock), server, [market.days[-1]])
    return server.count()


# --- time -----------------------------------------------------------------------------------------

def _timing(pg: Postgres, days: int) -> dict[str, Any]:
    chosen = first_trading_days(dt.date(2024, 6, 3), days)
    with pg.database() as dsn, Syncd(syncd_config(dsn)) as daemon:
        client = daemon.client(timeout=10)
        _, sync_s = run_to_end(client, chosen[0], chosen[-1], dsn=dsn)
        idle = _poll_status(client, lambda: None, seconds=3.0)
        outcome: dict[str, Any] = {}

        def reconcile() -> None:
            began = time.perf_counter()
            outcome["reply"] = client.reconcile(chosen[0], chosen[-1], "demo")
            outcome["seconds"] = time.perf_counter() - began

        busy = _poll_status(client, reconcile)
    reply = outcome["reply"]
    item = reply.reconciliation
    rows = [("sync (write)", days, round(sync_s, 2), round(sync_s / days * 1000, 1), "-"),
            ("reconcile against demo", days, round(outcome["seconds"], 2), round(outcome["seconds"] / days * 1000, 1),
             f"{item.findings} findings, {item.requests} requests")]
    print_table("Full-market days: synced, then reconciled (5,300 stocks a day)",
                ("what", "days", "seconds", "ms a day", "note"), rows)
    latency = [("idle", len(idle), _ms(idle, 50), _ms(idle, 99), _ms(idle, 100)),
               ("during the reconcile", len(busy), _ms(busy, 50), _ms(busy, 99), _ms(busy, 100))]
    print_table("status latency, one client polling every 50 ms", ("daemon", "calls", "p50 ms", "p99 ms", "max ms"), latency)
    return {"days": days, "sync_s": round(sync_s, 3), "reconcile_s": round(outcome["seconds"], 3),
            "reconcile_to_sync": round(outcome["seconds"] / sync_s, 2), "reconcile_findings": item.findings,
            "status_p99_idle_ms": _ms(idle, 99), "status_p99_reconciling_ms": _ms(busy, 99),
            "status_p99_ratio": round(_ms(busy, 99) / max(_ms(idle, 99), 1e-3), 2)}


def _poll_status(client: Any, work: Any, seconds: float | None = None) -> list[float]:
    """Time `status` every POLL_PERIOD_S while `work()` runs on a thread (or for `seconds`)."""
    thread = threading.Thread(target=work)
    thread.start()
    samples: list[float] = []
    deadline = time.monotonic() + (seconds or 0.0)
    while thread.is_alive() or time.monotonic() < deadline:
        began = time.perf_counter()
        client.status()
        samples.append(time.perf_counter() - began)
        time.sleep(POLL_PERIOD_S)  # the polling client's period, not a synchronisation
    thread.join()
    return samples


def _ms(samples: list[float], p: float) -> float:
    return round(percentile(samples, p) * 1000, 2) if samples else 0.0

