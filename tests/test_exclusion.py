"""Structural exclusion: one run at a time, whoever asks, and one daemon per state_dir."""

import subprocess
import sys
import threading

import pytest
from conftest import wait_until

from syncctl import SyncClient, SyncdBusy

TASK_FIELDS = {"run_id", "task_type", "requested_by", "start_time", "start_date", "end_date", "total_days",
               "trading_days", "days_done", "days_failed", "rows", "current_date", "progress"}
SLOW = {"source": {"demo": {"day_delay_s": 0.2}}}


def test_twenty_concurrent_starts_accept_exactly_one(syncd_factory):
    daemon = syncd_factory(SLOW)
    barrier = threading.Barrier(20)
    outcomes: list[object] = [None] * 20

    def start(i: int) -> None:
        client = SyncClient(daemon.endpoint, timeout=10)
        barrier.wait()
        try:
            outcomes[i] = client.start("2025-09-01", "2025-10-31", requested_by=f"client-{i}")
        except SyncdBusy as busy:
            outcomes[i] = busy

    threads = [threading.Thread(target=start, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    accepted = [o for o in outcomes if not isinstance(o, SyncdBusy)]
    rejected = [o for o in outcomes if isinstance(o, SyncdBusy)]
    assert len(accepted) == 1 and len(rejected) == 19
    run_id = accepted[0].run_id
    assert all(r.current_task.run_id == run_id for r in rejected)
    assert len(daemon.events("sync_rejected")) == 19
    assert len(daemon.events("sync_lock_acquired")) == 1


def test_busy_reply_carries_every_task_field(syncd_factory):
    daemon = syncd_factory(SLOW)
    client = daemon.client()
    first = client.start("2025-10-01", "2025-10-10", task_type="web_batch")
    raw = client.request({"op": "start", "start_date": "2025-10-11", "end_date": "2025-10-20"})
    assert raw["status"] == "rejected" and raw["code"] == "busy" and raw["message"]
    assert TASK_FIELDS <= set(raw["current_task"])
    assert raw["current_task"]["run_id"] == first.run_id
    assert raw["current_task"]["task_type"] == "web_batch"
    assert raw["current_task"]["total_days"] == 10


def test_start_retried_with_its_request_id_returns_the_same_run(syncd_factory):
    daemon = syncd_factory(SLOW)
    client = daemon.client()
    first = client.start("2025-09-01", "2025-09-30", request_id="retry-me")
    again = client.start("2025-09-01", "2025-09-30", request_id="retry-me")
    assert again.run_id == first.run_id
    daemon.wait_idle()
    after = client.start("2025-09-01", "2025-09-30", request_id="retry-me")
    assert after.run_id == first.run_id
    assert len(client.history()) == 1


def test_status_answers_while_a_run_is_active(syncd_factory):
    daemon = syncd_factory(SLOW)
    client = daemon.client()
    run = client.start("2025-09-01", "2025-10-31")
    status = wait_until(lambda: (s := client.status()).current_task and s.current_task.days_done >= 1 and s, what="progress")
    assert status.state == "running"
    assert status.current_task.run_id == run.run_id
    assert status.current_task.trading_days == 39
    assert 0 < status.current_task.progress < 1


def test_second_daemon_on_same_state_dir_is_refused_and_first_unaffected(syncd_factory):
    first = syncd_factory()
    pid = first.client().ping().pid
    second = subprocess.run([sys.executable, "-m", "syncd", "--config", str(first.config_path)],
                            cwd=first.folder, capture_output=True, text=True, timeout=30)
    assert second.returncode != 0
    assert f"already running (pid {pid})" in second.stderr
    assert first.client().ping().pid == pid
    assert first.client().start("2025-10-09", "2025-10-09").run_id


def test_lock_left_by_kill_9_does_not_block_a_restart(syncd_factory):
    daemon = syncd_factory()
    daemon.kill()
    daemon.start()
    assert daemon.client().ping().pid == daemon.proc.pid


@pytest.mark.parametrize("task_type", ["manual", "web_batch", "scheduler_daily", "scheduler_missing"])
def test_start_accepts_the_contract_task_types(syncd_factory, task_type):
    daemon = syncd_factory()
    reply = daemon.client().start("2025-10-09", "2025-10-09", task_type=task_type)
    assert reply.task.task_type == task_type
