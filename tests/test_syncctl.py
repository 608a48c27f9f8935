"""syncctl's contract: commands, --json, and exit codes 0/1/2/3/4; SyncClient's timeout."""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import msgspec
import pytest
import zmq
from conftest import query

from syncctl import SyncClient, SyncdUnreachable
from syncctl.cli import _eta_text, format_time, shared_offset
from syncd.protocol import Task

SHOWN_TIME = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{2}:\d{2}"  # how syncctl prints every time


def syncctl(*args: str, timeout: float = 60, cwd: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "syncctl.cli", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=env)


def env_without_endpoint(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SYNCD_ENDPOINT", "FORCE_COLOR", "NO_COLOR")}
    return {**env, "PYTHONPATH": os.pathsep.join(sys.path), **extra}


def test_client_without_a_daemon_times_out_as_unreachable(short_tmp):
    client = SyncClient(f"ipc://{short_tmp}/nobody.sock", timeout=0.3)
    started = time.monotonic()
    with pytest.raises(SyncdUnreachable):
        client.ping()
    assert time.monotonic() - started < 2
    with pytest.raises(SyncdUnreachable):  # a fresh socket after a timeout: still a clean error
        client.status()


def test_a_timeout_changed_between_calls_holds_for_the_next_call(short_tmp):
    endpoint = f"ipc://{short_tmp}/silent.sock"
    silent = zmq.Context.instance().socket(zmq.ROUTER)  # answers the first request, then never again
    silent.bind(endpoint)
    try:
        client = SyncClient(endpoint, timeout=600)
        answered = threading.Thread(target=lambda: silent.send_multipart([*silent.recv_multipart()[:2], b'{"status":"ok"}']))
        answered.start()
        assert client.request({"op": "ping"}) == {"status": "ok"}  # this thread's socket now exists, made with 600 s
        answered.join()
        client.timeout = 0.3
        started = time.monotonic()
        with pytest.raises(SyncdUnreachable):
            client.ping()
        assert time.monotonic() - started < 60
    finally:
        silent.close(linger=0)


def test_syncctl_without_a_daemon_exits_1_naming_the_endpoint(short_tmp):
    path = short_tmp / "stale.sock"  # a socket file left behind, nobody listening: syncctl waits its timeout
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    endpoint = f"ipc://{path}"
    result = syncctl("--endpoint", endpoint, "--timeout", "0.5", "status")
    assert result.returncode == 1
    assert f"syncd is not running at {endpoint}" in result.stderr


def test_syncctl_without_a_socket_file_fails_at_once_and_says_how_to_point_at_syncd(short_tmp):
    endpoint = f"ipc://{short_tmp}/nobody.sock"
    # a --timeout far longer than the subprocess may run: only failing without waiting passes
    result = syncctl("--endpoint", endpoint, "--timeout", "600", "status", timeout=30)
    assert result.returncode == 1
    assert f"no syncd socket at {short_tmp}/nobody.sock" in result.stderr
    for way in ("--config", "--endpoint", "SYNCD_ENDPOINT", "ipc:///run/syncd/syncd.sock"):
        assert way in result.stderr


def test_syncctl_outside_a_checkout_names_where_the_endpoint_came_from(short_tmp):
    result = syncctl("--timeout", "600", "ping", cwd=str(short_tmp), env=env_without_endpoint(), timeout=30)
    assert result.returncode == 1
    assert f"no syncd socket at {short_tmp}/var/syncd.sock" in result.stderr
    assert f"from the default (no ./config.toml in {short_tmp})" in result.stderr


def test_start_help_describes_the_range_and_the_date_format():
    result = syncctl("start", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--from D first day to sync: YYYY-MM-DD" in text
    assert "--to D last day to sync, included" in text
    assert "not 20251009" in text


def test_a_date_in_another_iso_spelling_is_bad_input(syncd_factory):
    result = syncctl("--endpoint", syncd_factory().endpoint, "days", "--from", "20251009", "--to", "2025-10-10")
    assert result.returncode == 2
    assert "YYYY-MM-DD" in result.stderr


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


def test_start_wait_json_is_json_lines_the_start_reply_then_the_run(syncd_factory):
    daemon = syncd_factory()
    result = syncctl("--endpoint", daemon.endpoint, "start", "--from", "2025-10-09", "--to", "2025-10-10", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    started, ended = (json.loads(line) for line in lines)
    assert started["status"] == "ok" and started["task"]["run_id"] == started["run_id"]
    assert set(ended) == {"status", "run"}
    assert (ended["run"]["run_id"], ended["run"]["status"]) == (started["run_id"], "succeeded")


def test_status_and_history_show_times_to_the_second_with_their_zone(syncd_factory):
    daemon = syncd_factory()
    daemon.client().start("2025-10-09", "2025-10-09")
    daemon.wait_idle()
    status = syncctl("--endpoint", daemon.endpoint, "status")
    assert re.search(rf"last run: .* started {SHOWN_TIME}, finished {SHOWN_TIME}", status.stdout), status.stdout
    assert not re.search(r"\d{2}:\d{2}:\d{2}\.\d", status.stdout)  # no microseconds
    assert not re.search(r"\dT\d", status.stdout)  # no raw ISO
    history = syncctl("--endpoint", daemon.endpoint, "history")
    assert re.search(r"started \([+-]\d{2}:\d{2}\)", history.stdout), history.stdout


def test_colour_never_splits_run_ids_and_dates(syncd_factory):
    daemon = syncd_factory()
    run_id = daemon.client().start("2025-10-09", "2025-10-10").run_id
    daemon.wait_idle()
    env = env_without_endpoint(FORCE_COLOR="1", COLUMNS="200")
    for command in (["status"], ["history"], ["days", "--from", "2025-10-09", "--to", "2025-10-10"]):
        result = syncctl("--endpoint", daemon.endpoint, *command, env=env)
        assert "\x1b[" in result.stdout, "rich did not colour: the test would prove nothing"
        assert run_id in result.stdout, (command, result.stdout)
        assert "2025-10-09" in result.stdout


def test_eta_is_the_daemons_estimate_and_never_dashes():
    task = Task(run_id="r", task_type="manual", requested_by="", start_time="", start_date="2025-10-09",
                end_date="2025-10-10", total_days=2)
    planned = msgspec.structs.replace(task, trading_days=2, days_done=1)
    assert _eta_text(task) == "planning"
    assert _eta_text(planned) == "ETA after the first day"
    assert _eta_text(msgspec.structs.replace(planned, eta_s=3.4)) == "ETA 3s"


def test_times_are_shown_in_the_wires_zone_with_their_offset():
    assert format_time("2025-10-18T16:00:05+08:00") == "2025-10-18 16:00:05 +08:00"
    assert format_time("2025-10-18T16:00:05+08:00", "+08:00") == "2025-10-18 16:00:05"
    assert format_time(None) == "-"
    assert shared_offset(["2025-10-18T16:00:05+08:00", None, "2025-10-19T01:00:00+08:00"]) == "+08:00"
    assert shared_offset(["2025-03-08T16:00:05-05:00", "2025-03-10T16:00:05-04:00"]) is None


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


DEMO_FAILURE = "demo source: fetch of 2025-10-09 failed (listed in source.demo.fail_dates)"


def test_a_failed_run_says_why_in_start_wait_status_and_history(syncd_factory):
    daemon = syncd_factory({"source": {"demo": {"fail_dates": ["2025-10-09", "2025-10-10"]}}})
    result = syncctl("--endpoint", daemon.endpoint, "start", "--from", "2025-10-09", "--to", "2025-10-10", "--wait")
    assert result.returncode == 4
    why = f"2 of 2 trading days failed: {DEMO_FAILURE} (2 days)"
    assert why in result.stdout
    assert daemon.client().history(limit=1)[0].error == why
    status = syncctl("--endpoint", daemon.endpoint, "status")
    assert why in status.stdout
    history = syncctl("--endpoint", daemon.endpoint, "history")
    assert DEMO_FAILURE in " ".join(history.stdout.replace("│", " ").split())


# --- the CLI's words ---------------------------------------------------------------------------

def test_error_codes_stay_in_json_and_the_exit_status_not_in_the_sentence(syncd_factory):
    daemon = syncd_factory()
    bad = syncctl("--endpoint", daemon.endpoint, "start", "--from", "2025-03-02", "--to", "2025-03-01")
    assert bad.returncode == 2
    assert bad.stderr.startswith("syncctl: ") and "invalid_range" not in bad.stderr
    nothing = syncctl("--endpoint", daemon.endpoint, "cancel")
    assert nothing.returncode == 2 and "not_running" not in nothing.stderr and "no sync is running" in nothing.stderr
    as_json = syncctl("--endpoint", daemon.endpoint, "cancel", "--json")
    assert as_json.returncode == 2 and json.loads(as_json.stdout)["code"] == "not_running"


def test_start_wait_says_how_many_days_were_written(syncd_factory):
    daemon = syncd_factory({"source": {"demo": {"fail_dates": ["2025-10-09", "2025-10-10"]}}})
    result = syncctl("--endpoint", daemon.endpoint, "start", "--from", "2025-10-09", "--to", "2025-10-10", "--wait")
    assert "failed: 0 of 2 trading days written, 2 failed, 0 rows" in result.stdout


def test_verify_over_a_range_without_a_trading_day_says_so(syncd_factory):
    daemon = syncd_factory()
    weekend = syncctl("--endpoint", daemon.endpoint, "verify", "--from", "2025-10-11", "--to", "2025-10-12")
    assert weekend.returncode == 0
    assert "no trading day in 2025-10-11..2025-10-12" in weekend.stdout and "every day is complete" not in weekend.stdout
    unsynced = syncctl("--endpoint", daemon.endpoint, "verify", "--from", "2025-10-13", "--to", "2025-10-14")
    assert "2 trading days not synced yet" in unsynced.stdout and "every day is complete" not in unsynced.stdout


def test_days_says_why_a_day_is_skipped(syncd_factory, database):
    daemon = syncd_factory()
    daemon.stop()  # the source's calendar (stored by a run) closes a weekday chinese_calendar calls open
    query(database, "INSERT INTO trade_calendar (date, is_open, source) VALUES ('2025-10-14', false, 'test') RETURNING date")
    daemon.start()
    days = syncctl("--endpoint", daemon.endpoint, "days", "--from", "2025-10-01", "--to", "2025-10-14")
    assert days.returncode == 0, days.stderr

    def row(date: str) -> str:
        return next(" ".join(line.replace("│", " ").split()) for line in days.stdout.splitlines() if date in line)

    assert "holiday (National Day)" in row("2025-10-01")
    assert "weekend" in row("2025-10-11")  # a Saturday chinese_calendar makes a working day: exchanges stay closed
    assert "not listed as a trading day by the source's calendar" in row("2025-10-14")
    assert json.loads(syncctl("--endpoint", daemon.endpoint, "days", "--from", "2025-10-11", "--to", "2025-10-11",
                              "--json").stdout)["days"][0]["reason"] == "weekend"


def test_the_progress_bar_keeps_elapsed_time_and_eta_at_80_columns():
    import io

    from rich.console import Console
    from rich.progress import Progress

    from syncctl.cli import progress_columns

    for width in (80, 100, 160):
        out = io.StringIO()
        console = Console(file=out, width=width, force_terminal=True, color_system=None)
        progress = Progress(*progress_columns(width), console=console)
        progress.add_task("20251018-200005-a1b2c3", total=4863, completed=1234, rows=6_540_200, day="2015-03-12",
                          eta="ETA after the first day")
        console.print(progress.make_tasks_table(progress.tasks))
        line = out.getvalue().strip()
        assert "…" not in line, (width, line)
        for shown in ("1234/4863 days", "6,540,200 rows", "0:00:00", "ETA after the first day", "━"):
            assert shown in line, (width, line)
