"""`verify` end to end: real syncd processes on CSV days with deliberately wrong rows, the CLI, the web route."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import query
from fastapi.testclient import TestClient

from syncctl.web import PREFIX, create_app

HEADER = "code,open,high,low,close,pre_close,volume,amount,turnover,pct_change"


def clean_rows(count: int, start: int = 0) -> list[str]:
    """`count` sane main-board rows: +1 % from 10.00, amount / volume inside [low, high]."""
    return [f"60{i:04d},10.0,10.15,9.95,10.1,10.0,10000,100500.0,1.0,1.0" for i in range(start, start + count)]


def write_day(folder: Path, day: str, rows: list[str]) -> None:
    (folder / f"{day}.csv").write_text("\n".join([HEADER, *rows]) + "\n")


def syncctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncctl.cli", *args], capture_output=True, text=True, timeout=60)


def csv_daemon(syncd_factory, folder: Path):
    return syncd_factory({"source": {"name": "csv", "csv": {"path": str(folder)}}})


def test_wrong_rows_are_written_and_each_is_flagged_by_verify(syncd_factory, short_tmp):
    data = short_tmp / "data"
    data.mkdir()
    write_day(data, "2025-10-09", clean_rows(200))
    wrong = ["600000,10.0,10.15,9.95,10.1,10.0,100,100500.0,1.0,1.0",   # volume in lots: amount / volume 1005
             "600001,10.0,9.9,10.2,10.1,10.0,10000,100500.0,1.0,1.0",   # high below low
             "600002,10.0,15.1,10.0,15.0,10.0,10000,125000.0,1.0,50.0"]  # +50 % on the main board
    write_day(data, "2025-10-10", [*wrong, *clean_rows(197, start=3)])
    daemon = csv_daemon(syncd_factory, data)
    client = daemon.client()
    client.start("2025-10-09", "2025-10-10")
    assert daemon.wait_idle().last_run.status == "succeeded"  # findings never block a write; 1 unit error in 200 is under 1 %
    days = {d.date: d for d in client.verify("2025-10-09", "2025-10-12")}
    assert days["2025-10-09"].anomalies == 0 and days["2025-10-11"].status == "skipped"
    found = {(f.stock, f.check) for f in days["2025-10-10"].findings}
    assert found == {("600000", "unit"), ("600001", "price_order"), ("600002", "price_limit")}
    assert days["2025-10-10"].anomalies == 3 and days["2025-10-10"].rows == 200 and days["2025-10-10"].expected is None

    result = syncctl("--config", str(daemon.config_path), "verify", "--from", "2025-10-09", "--to", "2025-10-10")
    assert result.returncode == 5, result.stdout + result.stderr
    assert "600002" in result.stdout and "price_limit" in result.stdout and "1 day(s) need attention" in result.stdout
    result = syncctl("--config", str(daemon.config_path), "verify", "--from", "2025-10-09", "--to", "2025-10-09", "--json")
    assert result.returncode == 0
    reply = json.loads(result.stdout)
    assert reply["status"] == "ok" and reply["days"][0] == {
        "date": "2025-10-09", "status": "success", "rows": 200, "expected": None, "missing": 0, "anomalies": 0,
        "findings": [], "checked": True, "source": "csv", "fallback_stocks": 0}


def test_too_many_unit_errors_fail_the_day_with_that_error(syncd_factory, short_tmp, database):
    data = short_tmp / "data"
    data.mkdir()
    write_day(data, "2025-10-09", clean_rows(100))
    lots = [f"60{i:04d},10.0,10.15,9.95,10.1,10.0,100,100500.0,1.0,1.0" for i in range(3)]  # 3 of 100: over 1 %
    write_day(data, "2025-10-10", [*lots, *clean_rows(97, start=3)])
    daemon = csv_daemon(syncd_factory, data)
    client = daemon.client()
    client.start("2025-10-09", "2025-10-10")
    run = daemon.wait_idle().last_run
    assert (run.status, run.days_failed) == ("partial", 1)
    day = {d.date: d for d in client.days("2025-10-09", "2025-10-10")}["2025-10-10"]
    assert day.status == "failed" and "unit guard: 3 of 100 rows" in day.error
    assert query(database, "SELECT count(*) FROM daily_bars WHERE trade_date = '2025-10-10'") == [(0,)]
    result = syncctl("--config", str(daemon.config_path), "verify", "--from", "2025-10-10", "--to", "2025-10-10")
    assert result.returncode == 5  # a failed day needs attention too


def test_verify_checks_days_written_before_findings_existed(syncd_factory, short_tmp, database):
    data = short_tmp / "data"
    data.mkdir()
    write_day(data, "2025-10-09", ["600002,10.0,15.1,10.0,15.0,10.0,10000,125000.0,1.0,50.0", *clean_rows(199, 3)])
    daemon = csv_daemon(syncd_factory, data)
    daemon.client().start("2025-10-09", "2025-10-09")
    daemon.wait_idle()
    query(database, "UPDATE sync_days SET checked_at = NULL, anomalies = NULL RETURNING date")  # as an older syncd left it
    query(database, "DELETE FROM bar_findings RETURNING code")
    [day] = daemon.client().verify("2025-10-09", "2025-10-09")
    assert day.checked and day.anomalies == 1 and day.findings[0].stock == "600002"
    assert query(database, "SELECT anomalies, checked_at IS NOT NULL FROM sync_days") == [(1, True)]


def test_web_verify_forwards_the_daemons_reply(syncd_factory, short_tmp):
    data = short_tmp / "data"
    data.mkdir()
    write_day(data, "2025-10-09", clean_rows(50))
    daemon = csv_daemon(syncd_factory, data)
    daemon.client().start("2025-10-09", "2025-10-09")
    daemon.wait_idle()
    http = TestClient(create_app(daemon.endpoint))
    response = http.get(f"{PREFIX}/verify", params={"start_date": "2025-10-09", "end_date": "2025-10-09"})
    assert response.status_code == 200
    assert response.json()["days"][0]["rows"] == 50 and response.json()["days"][0]["anomalies"] == 0
    assert http.get(f"{PREFIX}/verify", params={"start_date": "2025-10-09", "end_date": "nope"}).status_code == 422
