"""The data path on a real PostgreSQL: atomic idempotent days, failures, skipped days, recovery, arbitration."""

import subprocess
import sys

import pytest
from conftest import query, wait_until


def test_resync_is_idempotent(syncd_factory, database):
    daemon = syncd_factory()
    client = daemon.client()
    client.start("2025-09-01", "2025-09-30")
    daemon.wait_idle()
    before = query(database, "SELECT trade_date, count(*), sum(close) FROM daily_bars GROUP BY 1 ORDER BY 1")
    client.start("2025-09-01", "2025-09-30")
    status = daemon.wait_idle()
    after = query(database, "SELECT trade_date, count(*), sum(close) FROM daily_bars GROUP BY 1 ORDER BY 1")
    assert status.last_run.status == "succeeded"
    assert before == after and len(after) == 22
    assert {count for _, count, _ in after} == {200}


def test_fail_dates_make_the_run_partial_with_the_days_error(syncd_factory, database):
    daemon = syncd_factory({"source": {"demo": {"fail_dates": ["2025-10-10"]}}})
    client = daemon.client()
    client.start("2025-10-09", "2025-10-13")
    run = daemon.wait_idle().last_run
    assert run.status == "partial"
    assert (run.days_done, run.days_failed, run.rows) == (3, 1, 400)
    days = {d.date: d for d in client.days("2025-10-09", "2025-10-13")}
    assert days["2025-10-10"].status == "failed" and "2025-10-10" in days["2025-10-10"].error
    assert days["2025-10-09"].status == "success" and days["2025-10-11"].status == "skipped"
    assert query(database, "SELECT count(*) FROM daily_bars WHERE trade_date = '2025-10-10'") == [(0,)]
    assert daemon.events("day_failed")[0]["date"] == "2025-10-10"


def test_non_trading_days_are_skipped_and_never_fetched(syncd_factory):
    daemon = syncd_factory()
    client = daemon.client()
    reply = client.start("2025-09-27", "2025-10-12")  # includes National Day week and weekends
    run = daemon.wait_idle().last_run
    assert reply.task.total_days == 16
    assert run.trading_days == 4 and run.days_done == 4
    skipped = [d.date for d in client.days("2025-09-27", "2025-10-12") if d.status == "skipped"]
    assert "2025-10-01" in skipped and "2025-10-08" in skipped and "2025-10-11" in skipped
    assert len(skipped) == 12
    assert {e["date"] for e in daemon.events("day_synced")} == {"2025-09-29", "2025-09-30", "2025-10-09", "2025-10-10"}


def test_history_is_newest_first_even_within_one_second(syncd_factory):
    daemon = syncd_factory()
    client = daemon.client()
    ids = []
    for _ in range(4):
        ids.append(client.start("2025-10-11", "2025-10-12").run_id)  # a weekend: each run ends at once
        daemon.wait_idle()
    assert [run.run_id for run in client.history()] == ids[::-1]


def test_history_records_every_run_field(syncd_factory):
    daemon = syncd_factory()
    client = daemon.client()
    client.start("2025-10-09", "2025-10-10", task_type="web_batch", requested_by="alice")
    daemon.wait_idle()
    run = client.history(limit=1)[0]
    assert (run.task_type, run.requested_by, run.status, run.trading_days, run.rows) == ("web_batch", "alice", "succeeded", 2, 400)
    assert run.started_at.endswith("+08:00") and run.finished_at.endswith("+08:00")
    assert run.pid == daemon.proc.pid and run.host and run.error is None


def test_lost_database_connection_is_reopened_and_the_day_retried(syncd_factory, database):
    daemon = syncd_factory({"source": {"demo": {"day_delay_s": 0.1}}, "sync": {"retries": 3}})
    client = daemon.client()
    client.start("2025-09-01", "2025-09-30")
    wait_until(lambda: client.status().current_task.days_done >= 2, what="two days synced")
    killed = query(database, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE application_name = 'syncd' AND datname = current_database() AND pid <> pg_backend_pid()")
    assert killed
    run = daemon.wait_idle().last_run
    assert run.status == "succeeded" and run.days_done == 22
    assert query(database, "SELECT count(DISTINCT trade_date), count(*) FROM daily_bars") == [(22, 22 * 200)]


def test_two_daemons_on_one_database_arbitrate_by_advisory_lock(syncd_factory):
    first = syncd_factory({"source": {"demo": {"day_delay_s": 0.2}}}, name="a")
    second = syncd_factory(name="b")
    run = first.client().start("2025-09-01", "2025-10-31")
    wait_until(lambda: first.client().status().current_task.days_done >= 1, what="first run under way")
    reply = second.client().request({"op": "start", "start_date": "2025-10-09", "end_date": "2025-10-10"})
    assert reply["status"] == "rejected" and reply["code"] == "busy"
    assert reply["current_task"]["run_id"] == run.run_id
    first.client().cancel()
    first.wait_idle()
    wait_until(lambda: first.events("sync_lock_released"), what="first daemon to release the run lock\n" + first.log_text())
    assert second.client().start("2025-10-09", "2025-10-10").run_id


def test_compat_view_keeps_the_old_table_shape(syncd_factory, database):
    daemon = syncd_factory({"database": {"compat_view": True}})
    daemon.client().start("2025-10-09", "2025-10-09")
    daemon.wait_idle()
    rows = query(database, "SELECT stock_code, stock_name, volume, change_amount, amplitude, close_price, open_price "
                            "FROM daily_stock_data ORDER BY stock_code LIMIT 1")
    bar = query(database, "SELECT code, volume, close - pre_close, close, open FROM daily_bars ORDER BY code LIMIT 1")[0]
    assert rows[0][0] == bar[0] and rows[0][1].startswith("DEMO")
    assert rows[0][2] == round(bar[1] / 100)  # lots
    assert float(rows[0][3]) == pytest.approx(bar[2], abs=0.005)


def test_database_password_never_appears_in_output(short_tmp):
    config = short_tmp / "config.toml"
    config.write_text('[daemon]\nendpoint = "ipc://s.sock"\nstate_dir = "st"\n'
                      '[database]\ndsn = "postgresql://syncd:hunter2secret@127.0.0.1:1/market"\nconnect_timeout_s = 2\n'
                      '[log]\nformat = "json"\n')
    result = subprocess.run([sys.executable, "-m", "syncd", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "hunter2secret" not in result.stdout + result.stderr
    assert "127.0.0.1" in result.stderr  # the error still says where it tried


def test_embedded_default_end_to_end(short_tmp):
    from conftest import SyncdProcess

    config = {"daemon": {"endpoint": "ipc://s.sock", "state_dir": "st"}, "source": {"demo": {"stocks": 50}},
              "schedule": {"enabled": False}, "log": {"format": "json"}}
    daemon = SyncdProcess(short_tmp, config).start(timeout=120)
    try:
        client = daemon.client()
        assert client.status().daemon.database == "embedded"
        client.start("2025-10-09", "2025-10-10")
        assert daemon.wait_idle().last_run.rows == 100
        assert (short_tmp / "st" / "pgdata" / "PG_VERSION").exists()
    finally:
        assert daemon.stop() == 0
