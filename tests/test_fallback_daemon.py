"""Fallback in real syncd processes: the config's refusals (exit 78), provenance through `syncctl days`
and `verify`, the metrics and log events, the status while a fallback is asked, and kill -9 during
fallback days (each day holds none or all of its rows)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from conftest import wait_until
from test_metrics import free_port, scrape, value

from syncd.config import DemoConfig
from syncd.sources.base import COLUMNS
from syncd.sources.demo import DemoSource

WEEK = ("2025-09-08", "2025-09-12")


def csv_folder(folder: Path, stocks: int, days: list[str]) -> Path:
    """The demo market's rows (seed 7) as csv files for `days`."""
    folder.mkdir(exist_ok=True)
    market = DemoSource(DemoConfig(stocks=stocks, seed=7))
    for day in days:
        with (folder / f"{day}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows(row[:len(COLUMNS)] for row in market.rows_for(dt.date.fromisoformat(day)))
    return folder


def csv_primary(folder: Path, stocks: int = 200, **demo: object) -> dict[str, object]:
    return {"source": {"name": "csv", "fallback": ["demo"], "csv": {"path": str(folder)},
                       "demo": {"stocks": stocks, "seed": 7, **demo}}}


def syncctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncctl.cli", "--config", str(config), *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("fallback,expected", [
    ('["yahoo"]', ["source.fallback[0]", "yahoo", "expected one of", "baostock"]),
    ('["csv"]', ["source.fallback[0]", "'csv' is the primary source (source.name)"]),
    ('["demo", "tushare", "demo"]', ["source.fallback[2]", "'demo' is listed twice"]),
])
def test_a_bad_fallback_stops_the_daemon_at_start_naming_the_key(tmp_path, fallback, expected):
    path = tmp_path / "config.toml"
    path.write_text(f'[source]\nname = "csv"\nfallback = {fallback}\n')
    result = subprocess.run([sys.executable, "-m", "syncd", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 78, result.stderr
    for part in expected:
        assert part in result.stderr


def test_a_fallback_whose_settings_are_missing_stops_the_start_naming_it(syncd_factory, short_tmp):
    daemon = syncd_factory({"source": {"name": "demo", "fallback": ["csv", "tushare"]}}, start=False,
                           env={"SYNCD_TUSHARE_TOKEN": ""})
    assert daemon.spawn().wait(60) == 78
    assert "source.fallback[1]: source 'tushare' needs a token" in daemon.log_text()
    checked = subprocess.run([sys.executable, "-m", "syncd", "--check-config", str(daemon.config_path)], capture_output=True,
                             text=True, timeout=30, env={**daemon.env, "SYNCD_TUSHARE_TOKEN": ""})
    assert checked.returncode == 78 and "source.fallback[1]: source 'tushare' needs a token" in checked.stderr


def test_provenance_shows_in_days_verify_metrics_and_the_log(syncd_factory, short_tmp, database):
    data = csv_folder(short_tmp / "data", 200, ["2025-09-08", "2025-09-10", "2025-09-12"])
    port = free_port()
    daemon = syncd_factory({**csv_primary(data), "metrics": {"listen": f"127.0.0.1:{port}"}})
    families = scrape(port)
    assert value(families, "syncd_fallback_days_total", source="demo") == 0.0  # shown from the start
    client = daemon.client()
    client.start(*WEEK)
    assert daemon.wait_idle().last_run.status == "succeeded"

    days = {d.date: d for d in client.days(*WEEK)}
    assert {date: (d.status, d.rows, d.source, d.fallback_stocks) for date, d in days.items()} == {
        "2025-09-08": ("success", 200, "csv", 0), "2025-09-09": ("success", 200, "demo", 200),
        "2025-09-10": ("success", 200, "csv", 0), "2025-09-11": ("success", 200, "demo", 200),
        "2025-09-12": ("success", 200, "csv", 0)}
    assert [(d.date, d.source) for d in client.verify(*WEEK)][:2] == [("2025-09-08", "csv"), ("2025-09-09", "demo")]
    reply = json.loads(syncctl(daemon.config_path, "days", "--from", "2025-09-09", "--to", "2025-09-09", "--json").stdout)
    assert reply["days"][0]["source"] == "demo" and reply["days"][0]["fallback_stocks"] == 200
    shown = syncctl(daemon.config_path, "days", "--from", WEEK[0], "--to", WEEK[1]).stdout
    assert "source" in shown and "demo (200 from fallback)" in shown and "csv" in shown

    families = scrape(port)
    assert value(families, "syncd_fallback_days_total", source="demo") == 2.0
    assert value(families, "syncd_fallback_asks_total", source="demo", outcome="filled") == 2.0
    asked = daemon.events("day_fallback")
    assert [(e["date"], e["source"], e["outcome"]) for e in asked] == [("2025-09-09", "demo", "filled"),
                                                                       ("2025-09-11", "demo", "filled")]
    assert all(e["run_id"] for e in asked)
    with psycopg.connect(database) as conn:  # a day the fallback wrote whole has no per-stock entries: its source is the day's
        assert conn.execute("SELECT count(*) FROM bar_sources").fetchone() == (0,)


def test_kill_9_during_fallback_days_leaves_no_half_day(syncd_factory, short_tmp, database):
    data = csv_folder(short_tmp / "data", 3000, ["2025-09-01", "2025-09-02"])  # the other 19 days: the fallback's
    daemon = syncd_factory(csv_primary(data, stocks=3000, day_delay_s=0.05))
    client = daemon.client()
    run = client.start("2025-09-01", "2025-09-29")
    asking = wait_until(lambda: (t := client.status().current_task) is not None and t.fallback_source is not None and t,
                        what="the fallback being asked", interval=0.01)
    assert asking.fallback_source == "demo"
    wait_until(lambda: client.status().current_task.days_done >= 5, what="fallback days written")
    daemon.kill()

    with psycopg.connect(database) as conn:
        per_day = dict(conn.execute("SELECT trade_date, count(*) FROM daily_bars GROUP BY 1").fetchall())
        sources = dict(conn.execute("SELECT date, source FROM sync_days WHERE rows > 0").fetchall())
    assert set(per_day.values()) == {3000}  # each day holds none or all of its rows
    assert len(per_day) >= 5 and set(sources) == set(per_day)
    assert {day: source for day, source in sources.items() if day.isoformat() not in ("2025-09-01", "2025-09-02")} \
        == dict.fromkeys(set(per_day) - {dt.date(2025, 9, 1), dt.date(2025, 9, 2)}, "demo")

    daemon.start()
    assert daemon.client().history()[0].run_id == run.run_id and daemon.client().history()[0].status == "interrupted"
    days = daemon.client().days("2025-09-01", "2025-09-29")
    assert not [d for d in days if d.status == "syncing"]
    daemon.client().start("2025-09-01", "2025-09-29")
    assert daemon.wait_idle(timeout=120).last_run.status == "succeeded"
    with psycopg.connect(database) as conn:
        assert set(dict(conn.execute("SELECT trade_date, count(*) FROM daily_bars GROUP BY 1").fetchall()).values()) == {3000}
        assert conn.execute("SELECT count(*) FROM sync_days WHERE status = 'success' AND source = 'demo'").fetchone() == (19,)
