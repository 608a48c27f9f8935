"""[alert]: webhook POSTs from real daemons to a real local HTTP server that records them (and one that is
down, and one that stalls); the run never waits for the webhook, and the URL's secret never shows."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import socket
import threading
import zoneinfo
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from conftest import wait_until

from syncd.calendar import TradingCalendar
from syncd.telemetry.freshness import FreshnessJudge

ALERT_KEYS = {"event", "run_id", "task_type", "status", "start_date", "end_date", "days_failed", "message", "host"}
RUN_EVENTS = ["failed", "partial", "interrupted"]
FAST = {"timeout_s": 0.5, "retries": 1}


class Recorder:
    """A webhook on 127.0.0.1 that records each POST; `stall` holds every answer until the test ends."""

    def __init__(self, reply: bytes = b'{"errcode":0,"errmsg":"ok"}', stall: bool = False) -> None:
        self.posts: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.release = threading.Event()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recorder.paths.append(self.path)
                recorder.posts.append(json.loads(body))
                if stall:
                    recorder.release.wait(30)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/robot/send?access_token={self.token}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def recorder(**kwargs: Any) -> Iterator[Recorder]:
    hook = Recorder(**kwargs)
    try:
        yield hook
    finally:
        hook.close()


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook?key=dead-{secrets.token_hex(8)}"


def alert_config(url: str, **extra: Any) -> dict[str, Any]:
    return {"alert": {"webhook_url": url, "on": RUN_EVENTS, **FAST, **extra}}


def assert_secret_hidden(daemon: Any, secret: str) -> None:
    assert secret not in daemon.log_text()
    assert secret not in json.dumps(daemon.client().request({"op": "status"}))


# --- run events ---------------------------------------------------------------------------------

def test_a_failed_run_posts_one_json_message_with_the_contract_fields(syncd_factory) -> None:
    with recorder() as hook:
        daemon = syncd_factory({**alert_config(hook.url), "source": {"demo": {"fail_dates": ["2025-10-10"]}}})
        run_id = daemon.client().start("2025-10-10", "2025-10-10").run_id
        wait_until(lambda: hook.posts, what="the alert")
        (alert,) = hook.posts
        assert set(alert) == ALERT_KEYS
        assert alert["event"] == "failed" and alert["status"] == "failed" and alert["run_id"] == run_id
        assert alert["task_type"] == "manual" and alert["start_date"] == alert["end_date"] == "2025-10-10"
        assert alert["days_failed"] == 1 and alert["host"] == socket.gethostname()
        assert run_id in alert["message"] and "failed" in alert["message"]
        assert ("1 of 1 trading days failed: demo source: fetch of 2025-10-10 failed (listed in source.demo.fail_dates) "
                "(1 day)") in alert["message"]  # why, not only that
        assert hook.paths == [f"/robot/send?access_token={hook.token}"]
        wait_until(lambda: daemon.events("alert_sent"), what="alert_sent")
        assert_secret_hidden(daemon, hook.token)


def test_only_the_configured_events_alert_each_once(syncd_factory) -> None:
    with recorder() as hook:
        daemon = syncd_factory({**alert_config(hook.url, on=["partial"]),
                                "source": {"demo": {"fail_dates": ["2025-10-10"]}}})
        client = daemon.client()
        for start, end in (("2025-10-09", "2025-10-09"), ("2025-10-10", "2025-10-10"), ("2025-10-09", "2025-10-10")):
            client.start(start, end)   # succeeded, failed, partial
            daemon.wait_idle()
        wait_until(lambda: hook.posts, what="the partial alert")
        wait_until(lambda: daemon.events("alert_sent"), what="alert_sent")
        assert [a["event"] for a in hook.posts] == ["partial"]  # FIFO: the earlier ones would have come first


@pytest.mark.parametrize("fmt, shape", [
    ("dingtalk", lambda body: body["msgtype"] == "text" and set(body) == {"msgtype", "text"}),
    ("wecom", lambda body: body["msgtype"] == "text" and set(body) == {"msgtype", "text"}),
    ("slack", lambda body: set(body) == {"text"}),
])
def test_chat_formats_post_the_bots_own_message_shape(syncd_factory, fmt, shape) -> None:
    with recorder() as hook:
        daemon = syncd_factory({**alert_config(hook.url, format=fmt), "source": {"demo": {"fail_dates": ["2025-10-10"]}}})
        run_id = daemon.client().start("2025-10-10", "2025-10-10").run_id
        wait_until(lambda: hook.posts, what="the alert")
        (body,) = hook.posts
        assert shape(body)
        text = body["text"] if fmt == "slack" else body["text"]["content"]
        assert text.startswith("[syncd] failed:") and run_id in text


def test_a_bot_that_refuses_the_message_is_logged_alert_failed_without_retrying(syncd_factory) -> None:
    with recorder(reply=b'{"errcode":310000,"errmsg":"keywords not in content"}') as hook:
        daemon = syncd_factory({**alert_config(hook.url, format="dingtalk", retries=2),
                                "source": {"demo": {"fail_dates": ["2025-10-10"]}}})
        daemon.client().start("2025-10-10", "2025-10-10")
        (failed,) = wait_until(lambda: daemon.events("alert_failed"), what="alert_failed")
        assert "errcode 310000 keywords not in content" in failed["error"] and failed["attempts"] == 1
        assert failed["webhook_host"] == "127.0.0.1" and len(hook.posts) == 1
        assert_secret_hidden(daemon, hook.token)


# --- a webhook that is down or stalls never disturbs a run ----------------------------------------

def test_a_dead_webhook_is_logged_after_bounded_retries_and_runs_go_on(syncd_factory) -> None:
    url = dead_url()
    daemon = syncd_factory({**alert_config(url), "source": {"demo": {"fail_dates": ["2025-10-10"]}}})
    client = daemon.client()
    client.start("2025-10-10", "2025-10-10")
    assert daemon.wait_idle().last_run.status == "failed"
    (failed,) = wait_until(lambda: daemon.events("alert_failed"), what="alert_failed")
    assert failed["attempts"] == 2 and "cannot reach the webhook" in failed["error"] and failed["alert"] == "failed"
    client.start("2025-10-09", "2025-10-09")
    assert daemon.wait_idle().last_run.status == "succeeded"
    assert_secret_hidden(daemon, url.split("key=")[1])


def test_a_stalling_webhook_holds_neither_the_run_nor_the_next_one_nor_shutdown(syncd_factory) -> None:
    with recorder(stall=True) as hook:
        daemon = syncd_factory({**alert_config(hook.url, retries=0, timeout_s=30),
                                "source": {"demo": {"fail_dates": ["2025-10-10"]}}})
        client = daemon.client()
        client.start("2025-10-10", "2025-10-10")
        wait_until(lambda: hook.posts, what="the POST to arrive (and stall)")
        client.start("2025-10-09", "2025-10-13")  # while the webhook still holds the first alert
        assert daemon.wait_idle().last_run.status == "partial"
        assert client.status().state == "idle" and len(hook.posts) == 1  # the partial alert waits its turn
        assert daemon.stop() == 0  # the sender thread's grace ends; the stalled POST dies with the process


# --- interrupted and late -------------------------------------------------------------------------

def test_a_run_found_orphaned_at_start_up_alerts_interrupted(syncd_factory) -> None:
    with recorder() as hook:
        daemon = syncd_factory({**alert_config(hook.url), "source": {"demo": {"day_delay_s": 0.3}}})
        run_id = daemon.client().start("2025-09-01", "2025-10-31").run_id
        wait_until(lambda: daemon.client().status().current_task.days_done >= 1, what="a day synced")
        daemon.kill()
        daemon.start()
        wait_until(lambda: hook.posts, what="the interrupted alert")
        (alert,) = hook.posts
        assert alert["event"] == "interrupted" and alert["run_id"] == run_id and alert["status"] == "interrupted"


def latest_completed(late_after: str) -> dt.date:
    judge = FreshnessJudge(TradingCalendar(), zoneinfo.ZoneInfo("Asia/Shanghai"), dt.time.fromisoformat(late_after))
    day = judge.latest_completed(dt.datetime.now(judge.zone)).day
    assert day is not None
    return day


def test_late_is_judged_at_start_up_and_alerts_once_per_trading_day_across_restarts(syncd_factory) -> None:
    with recorder() as hook:
        daemon = syncd_factory({"alert": {"webhook_url": hook.url, "on": ["late"], "late_after": "00:00", **FAST}})
        day = latest_completed("00:00").isoformat()
        wait_until(lambda: hook.posts, what="the late alert")
        (alert,) = hook.posts
        assert set(alert) == ALERT_KEYS
        assert alert["event"] == "late" and alert["run_id"] is None and alert["start_date"] == alert["end_date"] == day
        assert alert["status"] == "pending" and "not synced by 00:00 (Asia/Shanghai)" in alert["message"]
        daemon.stop()
        daemon.start()
        (judged,) = wait_until(lambda: daemon.events("late_judged")[1:], what="the second start-up's judgement")
        assert judged["date"] == day and judged["alert"] == "already sent for this day"
        assert len(hook.posts) == 1


def test_late_stays_quiet_when_the_latest_completed_day_is_synced(syncd_factory) -> None:
    with recorder() as hook:
        day = latest_completed("00:00")
        daemon = syncd_factory({"alert": {"webhook_url": hook.url, "on": ["late"], "late_after": "00:00", **FAST}})
        wait_until(lambda: daemon.events("late_judged"), what="the start-up judgement")
        daemon.client().start(day, day)
        daemon.wait_idle()
        daemon.stop()
        daemon.start()
        (judged,) = wait_until(lambda: daemon.events("late_judged")[1:], what="the judgement after the sync")
        assert judged["date"] == day.isoformat() and judged["late"] is False and judged["day_status"] == "success"
        assert [a["event"] for a in hook.posts] == ["late"]  # the first start-up's, before the sync


def test_a_bad_webhook_url_is_refused_at_start_without_echoing_it(syncd_factory) -> None:
    secret = secrets.token_hex(8)
    daemon = syncd_factory({"alert": {"webhook_url": f"ftp://hooks.example/{secret}"}}, start=False)
    assert daemon.spawn().wait(60) == 78
    assert "alert.webhook_url: expected an http:// or https:// URL" in daemon.log_text()
    assert secret not in daemon.log_text()


def test_the_webhook_url_comes_from_SYNCD_ALERT_WEBHOOK_URL_when_set(short_tmp) -> None:
    from syncd.config import ConfigError, load_config

    config = short_tmp / "config.toml"
    config.write_text('[alert]\nwebhook_url = "https://hooks.example/from-file"\n')
    assert load_config(config, env={}).alert.webhook_url == "https://hooks.example/from-file"
    env = {"SYNCD_ALERT_WEBHOOK_URL": "https://oapi.dingtalk.com/robot/send?access_token=s3cret"}
    assert load_config(config, env=env).alert.webhook_url == env["SYNCD_ALERT_WEBHOOK_URL"]
    with pytest.raises(ConfigError, match="SYNCD_ALERT_WEBHOOK_URL: expected an http") as refused:
        load_config(config, env={"SYNCD_ALERT_WEBHOOK_URL": "s3cret-not-a-url"})
    assert "s3cret" not in str(refused.value)


def test_the_monitor_judges_late_at_start_up_and_again_when_late_after_passes(database: str, short_tmp) -> None:
    import time

    from syncd.db import connection, migrations
    from syncd.telemetry.poller import FreshnessPoller

    with connection.connect(database) as conn:
        migrations.migrate(conn)
    zone = zoneinfo.ZoneInfo("Asia/Shanghai")
    judge = FreshnessJudge(TradingCalendar(), zone, dt.time(22, 0))
    started, base = time.monotonic(), dt.datetime(2025, 10, 17, 21, 59, 59, 500000, tzinfo=zone)  # a Friday
    verdicts = []
    monitor = FreshnessPoller(database, judge, refresh_every_s=None, on_late=verdicts.append, state_dir=short_tmp,
                      timezone="Asia/Shanghai", now=lambda: base + dt.timedelta(seconds=time.monotonic() - started))
    monitor.start()
    try:
        wait_until(lambda: len(verdicts) == 2, what="the start-up judgement, then the one at 22:00")
    finally:
        monitor.stop()
    assert [v.completed.day for v in verdicts] == [dt.date(2025, 10, 16), dt.date(2025, 10, 17)]
    assert all(v.late and v.day_status == "pending" for v in verdicts)
    assert (short_tmp / "late-alerted").read_text().strip() == "2025-10-17"
