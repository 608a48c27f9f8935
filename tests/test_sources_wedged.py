"""A real syncd against a wedged upstream: days fail in bounded time, status answers, SIGTERM stops it.

One daemon per source (akshare through its relay, baostock through its server address,
Tushare through its url), each against a local server that answers the reference data and
then stalls data requests: the run must end with those days failed and the reason in their
`error` within the bound docs/sources.md states for these settings, `status` must answer
throughout, and a daemon stopped while a request is stalled must exit within 10 s.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import wait_until
from market import DAYS, Market
from upstreams import BaostockServer, HttpUpstream, akshare_route, is_hist, tushare_route

pytestmark = pytest.mark.fault
RANGE = (DAYS[0], DAYS[3])  # 2024-01-02 .. 2024-01-05, four trading days
WEDGED_DAY = DAYS[2]
FAST = {"request_timeout_s": 0.5, "call_deadline_s": 2.0, "request_retries": 0, "give_up_after": 2}
SLOW = {"request_timeout_s": 600.0, "call_deadline_s": 600.0, "request_retries": 0}  # only a stop can end a call


class Upstreams:
    """Each source's local upstream, and how to make its data requests stall."""

    def __init__(self) -> None:
        self.market = Market()
        self.http: list[HttpUpstream] = []
        self.baostock: list[BaostockServer] = []

    def source(self, name: str, settings: dict[str, Any], wedge_day_only: bool) -> tuple[dict[str, Any], Callable[[], int]]:
        day = f"{WEDGED_DAY:%Y%m%d}"
        if name == "tushare":
            server = HttpUpstream(tushare_route(self.market))
            self.http.append(server)
            server.misbehave("stall", when=lambda r: r.json()["api_name"] == "daily"
                             and (not wedge_day_only or r.json()["params"]["trade_date"] == day))
            config = {"name": name, "tushare": {"token": "good-token", "url": server.url, "requests_per_minute": 6000,
                                                **settings}}
            return config, lambda: server.count(lambda r: r.json()["api_name"] == "daily")
        if name == "akshare":
            server = HttpUpstream(akshare_route(self.market))
            self.http.append(server)
            server.misbehave("stall", when=is_hist("000004") if wedge_day_only else is_hist())
            config = {"name": name, "akshare": {"relay": server.url, "snapshot_today": False, "requests_per_second": 100,
                                                **settings}}
            return config, lambda: server.count(is_hist())
        tcp = BaostockServer(self.market)
        self.baostock.append(tcp)
        tcp.misbehave("stall", when=lambda a: a.kind == "98" and (not wedge_day_only or a.fields[2] == str(WEDGED_DAY)))
        config = {"name": name, "baostock": {"server": tcp.address, "requests_per_second": 100, **settings}}
        return config, lambda: tcp.count(lambda a: a.kind == "98")

    def stop(self) -> None:
        for server in [*self.http, *self.baostock]:
            server.stop()


@pytest.fixture
def upstreams() -> Iterator[Upstreams]:
    made = Upstreams()
    yield made
    made.stop()


def _poll_status_until_idle(daemon: Any, timeout: float) -> list[float]:
    """Ask status every 0.1 s until the run is over; each answer's latency."""
    client = daemon.client(timeout=2.0)
    latencies: list[float] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        asked = time.monotonic()
        status = client.status()
        latencies.append(time.monotonic() - asked)
        if status.state == "idle" and status.last_run is not None:
            return latencies
        time.sleep(0.1)
    raise AssertionError(f"the run did not end within {timeout} s")


@pytest.mark.parametrize("source", ["tushare", "baostock", "akshare"])
def test_a_wedged_upstream_fails_the_day_in_bounded_time_while_status_answers(syncd_factory: Any, upstreams: Upstreams,
                                                                             source: str) -> None:
    config, _ = upstreams.source(source, FAST, wedge_day_only=True)
    daemon = syncd_factory({"source": config})
    client = daemon.client(timeout=5.0)
    started = time.monotonic()
    client.start(*RANGE)
    latencies = _poll_status_until_idle(daemon, timeout=90)
    elapsed = time.monotonic() - started
    run = client.history(limit=1)[0]
    days = {day.date: day for day in client.days(*RANGE)}
    assert run.status in ("partial", "failed")
    wedged = days[WEDGED_DAY.isoformat()] if isinstance(next(iter(days)), str) else days[WEDGED_DAY]
    assert wedged.status in ("failed", "incomplete")
    assert "no answer within" in (wedged.error or "") or "timed out" in (wedged.error or "")
    assert max(latencies) < 2.0  # status never waited on the worker
    assert elapsed < 60  # the bound for these settings (docs/sources.md): far below; a hang never ends


@pytest.mark.parametrize("source", ["tushare", "baostock", "akshare"])
def test_sigterm_stops_the_daemon_within_10_s_while_a_request_is_stalled(syncd_factory: Any, upstreams: Upstreams,
                                                                         source: str) -> None:
    config, stalled_requests = upstreams.source(source, SLOW, wedge_day_only=False)
    daemon = syncd_factory({"source": config})
    daemon.client(timeout=5.0).start(*RANGE)
    wait_until(lambda: stalled_requests() >= 1, timeout=60, what="a data request to reach the wedged upstream")
    assert daemon.client(timeout=2.0).status().state == "running"
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    daemon.proc.wait(timeout=10)
    assert time.monotonic() - started < 10
