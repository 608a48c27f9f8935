"""[metrics]: Prometheus text format at /metrics, read with prometheus_client's own parser as the oracle."""

from __future__ import annotations

import datetime as dt
import socket
import urllib.request
import zoneinfo
from typing import Any

import psycopg
import pytest
from conftest import query, wait_until
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from syncd.calendar import TradingCalendar
from syncd.config import Config
from syncd.control.runstate import RunState
from syncd.db import connection, migrations
from syncd.sources.base import Source
from syncd.telemetry.freshness import FreshnessJudge, midnight_epoch
from syncd.telemetry.hub import Telemetry
from syncd.telemetry.metrics import DaemonCollector, Metrics
from syncd.telemetry.poller import FreshnessPoller

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
CONTRACT_NAMES = {
    "syncd_up", "syncd_run_active", "syncd_runs", "syncd_days", "syncd_rows", "syncd_last_success_timestamp_seconds",
    "syncd_latest_synced_trade_date_seconds", "syncd_latest_completed_trade_date_seconds", "syncd_requests",
    "syncd_request_duration_seconds", "syncd_day_write_duration_seconds", "syncd_source_requests",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[str, Any]:
    """{family name: family} of one scrape of http://127.0.0.1:port/metrics, parsed by prometheus_client."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict[str, Any], name: str, **labels: str) -> float | None:
    """The value of the sample `name` with exactly these labels (None if absent)."""
    family_name = name.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    family = families.get(family_name)
    for sample in family.samples if family else ():
        if sample.name == name and sample.labels == labels:
            return float(sample.value)
    return None


@pytest.fixture
def metrics_daemon(syncd_factory):
    def make(extra: dict[str, Any] | None = None):
        port = free_port()
        config = {"metrics": {"listen": f"127.0.0.1:{port}"}, **(extra or {})}
        return syncd_factory(config), port
    return make


def test_the_contract_names_are_served_in_text_format(metrics_daemon) -> None:
    daemon, port = metrics_daemon()
    families = wait_until(lambda: (f := scrape(port)) and "syncd_latest_synced_trade_date_seconds" in f and f,
                          what="the monitor's first read")
    assert CONTRACT_NAMES <= set(families)
    assert value(families, "syncd_up") == 1.0
    assert value(families, "syncd_run_active") == 0.0
    assert value(families, "syncd_latest_synced_trade_date_seconds") == 0.0  # nothing synced yet
    assert families["syncd_request_duration_seconds"].type == "histogram"
    assert families["syncd_runs"].type == "counter"
    assert [e for e in daemon.events("metrics_listening")][0]["url"] == f"http://127.0.0.1:{port}/metrics"


def test_a_run_moves_the_counters_and_the_freshness_gauges(metrics_daemon) -> None:
    daemon, port = metrics_daemon({"source": {"demo": {"fail_dates": ["2025-10-10"]}}})
    client = daemon.client()
    client.start("2025-10-09", "2025-10-13")  # Thu, Fri (fails), Sat, Sun, Mon
    run = daemon.wait_idle().last_run
    assert run.status == "partial"
    families = wait_until(lambda: (f := scrape(port)) and value(f, "syncd_latest_synced_trade_date_seconds") and f,
                          what="the monitor's read after the run")
    assert value(families, "syncd_runs_total", task_type="manual", status="partial") == 1.0
    assert value(families, "syncd_days_total", status="success") == 2.0
    assert value(families, "syncd_days_total", status="failed") == 1.0
    assert value(families, "syncd_rows_total") == run.rows == 400.0
    assert value(families, "syncd_day_write_duration_seconds_count") == 2.0
    assert value(families, "syncd_requests_total", op="start", status="ok") == 1.0
    assert value(families, "syncd_request_duration_seconds_count", op="start") == 1.0
    assert value(families, "syncd_latest_synced_trade_date_seconds") == midnight_epoch(dt.date(2025, 10, 13), SHANGHAI)
    assert value(families, "syncd_last_success_timestamp_seconds", task_type="manual") is None  # partial is not success
    client.start("2025-10-14", "2025-10-14")
    daemon.wait_idle()
    families = wait_until(lambda: (f := scrape(port)) and value(f, "syncd_last_success_timestamp_seconds",
                                                                task_type="manual") and f, what="last success")
    finished = query(daemon.config["database"]["dsn"], "SELECT extract(epoch FROM finished_at) FROM sync_runs "
                                                      "WHERE status = 'succeeded'")[0][0]
    assert value(families, "syncd_last_success_timestamp_seconds", task_type="manual") == pytest.approx(float(finished))


def test_run_active_is_1_while_a_run_is_in_flight(metrics_daemon) -> None:
    daemon, port = metrics_daemon({"source": {"demo": {"day_delay_s": 0.3}}})
    run_id = daemon.client().start("2025-10-09", "2025-10-31").run_id
    assert value(scrape(port), "syncd_run_active") == 1.0
    daemon.client().cancel(run_id)
    daemon.wait_idle()
    assert value(scrape(port), "syncd_run_active") == 0.0


def test_bad_requests_are_counted_as_op_invalid(metrics_daemon) -> None:
    daemon, port = metrics_daemon()
    daemon.client().request({"op": "nonsense"})
    assert value(scrape(port), "syncd_requests_total", op="invalid", status="error") == 1.0


def test_a_request_refused_after_it_decoded_is_counted_under_its_op(metrics_daemon) -> None:
    daemon, port = metrics_daemon()
    reply = daemon.client().request({"op": "days", "start_date": "2025-10-13", "end_date": "2025-10-09"})
    assert reply["status"] == "error", reply
    families = scrape(port)
    assert value(families, "syncd_requests_total", op="days", status="error") == 1.0
    assert value(families, "syncd_requests_total", op="invalid", status="error") is None


def test_latest_completed_is_the_day_check_judges(metrics_daemon) -> None:
    daemon, port = metrics_daemon()
    completed = daemon.client().check().latest_completed_trading_day
    expected = midnight_epoch(dt.date.fromisoformat(completed), SHANGHAI)
    assert value(scrape(port), "syncd_latest_completed_trade_date_seconds") == expected


def test_a_metrics_port_in_use_stops_syncd_with_exit_78_naming_the_key(syncd_factory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = syncd_factory({"metrics": {"listen": f"127.0.0.1:{port}"}}, start=False)
        proc = daemon.spawn()
        assert proc.wait(60) == 78
    assert f"metrics.listen: cannot listen on 127.0.0.1:{port}" in daemon.log_text()


def test_without_metrics_listen_nothing_is_served(syncd_factory) -> None:
    daemon = syncd_factory()
    assert daemon.events("metrics_listening") == []


# --- in process: the scrape never waits on the database ------------------------------------------

def test_a_scrape_answers_from_the_cache_while_the_database_blocks_the_monitor(database: str, short_tmp) -> None:
    with connection.connect(database) as conn:
        migrations.migrate(conn)
    judge = FreshnessJudge(TradingCalendar(), SHANGHAI, dt.time(22))
    monitor = FreshnessPoller(database, judge, refresh_every_s=0.05, on_late=None, state_dir=short_tmp, timezone="Asia/Shanghai")
    metrics = Metrics()
    metrics.add_collector(DaemonCollector(RunState(), monitor.facts, monitor.latest_completed, SHANGHAI))
    monitor.start()
    try:
        wait_until(monitor.facts, what="the first read")
        with psycopg.connect(database) as blocker:  # a transaction holding sync_days: the monitor's next read waits
            blocker.execute("LOCK TABLE sync_days IN ACCESS EXCLUSIVE MODE")
            wait_until(lambda: query(database, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'syncd-monitor' "
                                               "AND wait_event_type = 'Lock'"), what="the monitor to wait on the lock")
            families = {f.name: f for f in text_string_to_metric_families(generate_latest(metrics.registry).decode())}
            assert value(families, "syncd_up") == 1.0
            assert value(families, "syncd_latest_synced_trade_date_seconds") == 0.0  # the cached read
    finally:
        monitor.stop()


def test_sources_count_requests_through_the_counter_they_are_handed() -> None:
    class CountingSource(Source):
        name = "akshare"
        count = None

        def attach_request_counter(self, count):  # the hook every source has (syncd/sources/base.py)
            self.count = count

    telemetry = Telemetry(Config())
    source = CountingSource()
    telemetry.attach_source(source)
    source.count("ok")
    source.count("ok")
    source.count("timeout")
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(telemetry.metrics.registry).decode())}
    assert value(families, "syncd_source_requests_total", source="akshare", outcome="ok") == 2.0
    assert value(families, "syncd_source_requests_total", source="akshare", outcome="timeout") == 1.0
    assert value(families, "syncd_source_requests_total", source="akshare", outcome="error") == 0.0
    telemetry.attach_source(Source())  # the base's hook: a source that makes no counted request ignores it


def test_the_example_alert_rules_use_only_metrics_syncd_serves(metrics_daemon) -> None:
    import re
    from pathlib import Path

    rules = (Path(__file__).resolve().parent.parent / "docs" / "alerts.rules.yml").read_text()
    used = {name.removesuffix("_total") for name in re.findall(r"\bsyncd_[a-z_]+", rules)}
    daemon, port = metrics_daemon()
    served = wait_until(lambda: (f := scrape(port)) and "syncd_database_facts_timestamp_seconds" in f and set(f),
                        what="a full scrape")
    assert used and used <= served, used - served
