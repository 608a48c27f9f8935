"""Cancel and SIGKILL: every run ends recorded, and every day holds none or all of its rows.

SIGTERM mid-run, and kill -9 at many random instants, are in test_fault_data.py.
"""

import psycopg
from conftest import wait_until

SLOW = {"source": {"demo": {"day_delay_s": 0.1}}}


def _rows_per_day(dsn: str) -> dict:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT trade_date, count(*) FROM daily_bars GROUP BY 1").fetchall())


def test_cancel_stops_the_run_and_records_it_cancelled(syncd_factory):
    daemon = syncd_factory(SLOW)
    client = daemon.client()
    run = client.start("2025-09-01", "2025-10-31")
    wait_until(lambda: client.status().current_task.days_done >= 2, what="two days synced")
    reply = client.cancel(run.run_id)
    assert reply.run_id == run.run_id and reply.state == "cancelling"
    status = daemon.wait_idle(timeout=10)
    assert status.last_run.status == "cancelled"
    assert 2 <= status.last_run.days_done < 39
    days = client.days("2025-09-01", "2025-10-31")
    assert not [d for d in days if d.status == "syncing"]


def test_cancel_of_another_run_id_is_refused(syncd_factory):
    daemon = syncd_factory(SLOW)
    client = daemon.client()
    client.start("2025-09-01", "2025-10-31")
    reply = client.request({"op": "cancel", "run_id": "not-this-one"})
    assert reply["status"] == "error" and reply["code"] == "not_running"
    assert client.status().state == "running"


def test_kill_9_mid_run_then_restart_records_interrupted_and_no_half_days(syncd_factory, database):
    daemon = syncd_factory({"source": {"demo": {"stocks": 3000, "day_delay_s": 0.02}}})
    client = daemon.client()
    run = client.start("2025-09-01", "2025-10-31")
    wait_until(lambda: client.status().current_task.days_done >= 3, what="three days synced")
    daemon.kill()
    daemon.start()
    runs = daemon.client().history()
    assert runs[0].run_id == run.run_id and runs[0].status == "interrupted"
    assert set(_rows_per_day(database).values()) == {3000}  # each day holds 0 or all its rows
    days = daemon.client().days("2025-09-01", "2025-10-31")
    assert not [d for d in days if d.status == "syncing"]
    assert daemon.events("run_interrupted")[0]["run_id"] == run.run_id
    again = daemon.client().start("2025-09-01", "2025-09-05")
    assert again.run_id != run.run_id
