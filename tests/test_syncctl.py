"""syncctl's contract: commands, --json, and exit codes 0/1/2/3/4; SyncClient's timeout."""

import json
import subprocess
import sys
import time

import pytest

from syncctl import SyncClient, SyncdUnreachable


def syncctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "syncctl.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_client_without_a_daemon_times_out_as_unreachable(short_tmp):
    client = SyncClient(f"ipc://{short_tmp}/nobody.sock", timeout=0.3)
    started = time.monotonic()
    with pytest.raises(SyncdUnreachable):
        client.ping()
    assert time.monotonic() - started < 2
    with pytest.raises(SyncdUnreachable):  # a fresh socket after a timeout: still a clean error
        client.status()


def test_syncctl_without_a_daemon_exits_1_naming_the_endpoint(short_tmp):
    endpoint = f"ipc://{short_tmp}/nobody.sock"
    result = syncctl("--endpoint", endpoint, "--timeout", "0.5", "status")
    assert result.returncode == 1
    assert f"syncd is not running at {endpoint}" in result.stderr


def test_syncctl_ping_and_status_json(syncd_factory):
    daemon = syncd_factory()
    assert syncctl("--config", str(daemon.config_path), "ping").returncode == 0
    result = syncctl("--config", str(daemon.config_path), "status", "--json")
    assert result.returncode == 0
    reply = json.loads(result.stdout)
    assert reply["status"] == "ok" and reply["state"] == "idle"
    assert reply["daemon"]["pid"] == daemon.proc.pid


def test_syncctl_start_wait_succeeds_with_exit_0(syncd_factory):
    daemon = syncd_factory()
    result = syncctl("--endpoint", daemon.endpoint, "start", "--from", "2025-10-09", "--to", "2025-10-10", "--wait")
    assert result.returncode == 0, result.stderr
    assert "succeeded" in result.stdout


def test_syncctl_start_wait_partial_exits_4(syncd_factory):
    daemon = syncd_factory({"source": {"demo": {"fail_dates": ["2025-10-10"]}}})
    result = syncctl("--endpoint", daemon.endpoint, "--json", "start", "--from", "2025-10-09", "--to", "2025-10-10", "--wait")
    assert result.returncode == 4
    final = json.loads(result.stdout.strip().splitlines()[-1])
    assert final["run"]["status"] == "partial"


def test_syncctl_busy_exits_3_and_names_the_running_task(syncd_factory):
    daemon = syncd_factory({"source": {"demo": {"day_delay_s": 0.2}}})
    run = daemon.client().start("2025-09-01", "2025-10-31")
    result = syncctl("--endpoint", daemon.endpoint, "start", "--from", "2025-10-09", "--to", "2025-10-10")
    assert result.returncode == 3
    assert run.run_id in result.stderr
    as_json = syncctl("--endpoint", daemon.endpoint, "start", "--from", "2025-10-09", "--to", "2025-10-10", "--json")
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["current_task"]["run_id"] == run.run_id


@pytest.mark.parametrize("args", [
    ["start", "--from", "2025-02-30", "--to", "2025-03-01"],
    ["start", "--from", "2025-03-02", "--to", "2025-03-01"],
    ["days", "--from", "yesterday", "--to", "2025-03-01"],
    ["history", "--limit", "0"],
    ["frobnicate"],
])
def test_syncctl_bad_input_exits_2(syncd_factory, args):
    daemon = syncd_factory()
    result = syncctl("--endpoint", daemon.endpoint, *args)
    assert result.returncode == 2
    assert result.stderr.strip()


def test_syncctl_history_and_days_tables(syncd_factory):
    daemon = syncd_factory()
    daemon.client().start("2025-10-09", "2025-10-12")
    daemon.wait_idle()
    history = syncctl("--endpoint", daemon.endpoint, "history")
    assert history.returncode == 0 and "succeeded" in history.stdout
    days = syncctl("--endpoint", daemon.endpoint, "days", "--from", "2025-10-09", "--to", "2025-10-12", "--json")
    statuses = [d["status"] for d in json.loads(days.stdout)["days"]]
    assert statuses == ["success", "success", "skipped", "skipped"]


def test_syncctl_cancel_with_nothing_running_exits_2(syncd_factory):
    daemon = syncd_factory()
    result = syncctl("--endpoint", daemon.endpoint, "cancel")
    assert result.returncode == 2
    assert "no sync is running" in result.stderr


def test_one_client_shared_by_many_threads(syncd_factory):
    import threading

    daemon = syncd_factory()
    client = daemon.client()
    pids, errors = [], []

    def work():
        try:
            for _ in range(25):
                pids.append(client.ping().pid)
        except Exception as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and pids == [daemon.proc.pid] * 200


def test_client_recovers_after_a_timeout_when_the_daemon_returns(syncd_factory):
    daemon = syncd_factory()
    client = daemon.client(timeout=0.5)
    assert client.ping()
    daemon.stop()
    with pytest.raises(SyncdUnreachable):
        client.ping()
    daemon.start()
    assert client.ping().pid == daemon.proc.pid
