"""syncctl.web against a real syncd: the seed's two-curl check, status codes, and configuration.

The router only forwards: every test here talks HTTP to the FastAPI app (TestClient, or
uvicorn on a free port where concurrency matters) and the app talks ZeroMQ to a real syncd
on a real PostgreSQL.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import msgspec
import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed: pip install -e '.[web]'")

import httpx
import uvicorn
from conftest import wait_until
from fastapi import FastAPI
from fastapi.testclient import TestClient

from syncctl.web import PREFIX, configure, create_app, router
from syncd.protocol import Task

SLOW = {"source": {"demo": {"day_delay_s": 0.5}}}
TASK_FIELDS = {field.name for field in msgspec.structs.fields(Task)}
DEAD_ENDPOINT = "ipc:///tmp/syncd-web-test-nobody-listens.sock"


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run `app` under uvicorn in a thread on 127.0.0.1 and a free port; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 10, what="uvicorn to start")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def api(daemon, timeout: float = 5.0) -> TestClient:
    return TestClient(create_app(daemon.endpoint, timeout=timeout))


def start(http: TestClient, start_date: str, end_date: str) -> httpx.Response:
    return http.post(f"{PREFIX}/sync/batch", json={"start_date": start_date, "end_date": end_date})


# --- the seed's verification, verbatim ---------------------------------------------------------
def test_second_batch_while_first_runs_gets_409_with_the_seeds_body(syncd_factory):
    http = api(syncd_factory(SLOW))
    first = http.post("/api/v1/sync-status/sync/batch", headers={"Content-Type": "application/json"},
                      content='{"start_date": "2025-10-01", "end_date": "2025-10-10"}')
    second = http.post("/api/v1/sync-status/sync/batch", headers={"Content-Type": "application/json"},
                       content='{"start_date": "2025-10-11", "end_date": "2025-10-20"}')

    assert first.status_code == 200, first.text
    assert first.json()["status"] == "ok"
    assert second.status_code == 409, second.text
    body = second.json()
    assert set(body) == {"status", "message", "current_task"}
    assert body["status"] == "error"  # the seed's body (docs/web.md): the wire's busy reply says "rejected", the web's does not
    assert body["message"] == "已有同步任务正在运行，请等待当前任务完成后再试"
    task = body["current_task"]
    assert TASK_FIELDS <= set(task)
    assert task["task_type"] == "web_batch"
    assert (task["start_date"], task["end_date"], task["total_days"]) == ("2025-10-01", "2025-10-10", 10)
    assert task["run_id"] == first.json()["run_id"]
    assert task["start_time"]


def test_batch_start_replies_with_the_daemons_task(syncd_factory):
    daemon = syncd_factory()
    reply = start(api(daemon), "2025-09-29", "2025-10-10")
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "ok"
    assert body["task"]["task_type"] == "web_batch"
    assert body["task"]["requested_by"] == "web:testclient"
    assert body["task"]["total_days"] == 12
    assert daemon.wait_idle().last_run.run_id == body["run_id"]


# --- bad input -> 422 ---------------------------------------------------------------------------
@pytest.mark.parametrize("start_date, end_date, reason", [
    ("2025-02-30", "2025-03-02", "day is out of range for month"),
    ("2025/10/01", "2025-10-10", "is not a date (expected YYYY-MM-DD)"),
    ("yesterday", "2025-10-10", "is not a date"),
    ("2025-10-10", "2025-10-01", "is after end_date"),
    ("2020-01-01", "2025-10-10", "more than sync.max_days = 400"),
])
def test_bad_range_is_422_with_the_reason(syncd_factory, start_date, end_date, reason):
    daemon = syncd_factory({"sync": {"max_days": 400}})
    reply = start(api(daemon), start_date, end_date)
    assert reply.status_code == 422
    body = reply.json()
    assert body["status"] == "error"
    assert body["code"] in {"bad_request", "invalid_range"}
    assert reason in body["message"]
    assert daemon.client().status().state == "idle"


def test_start_after_end_is_refused_by_the_daemon_with_invalid_range(syncd_factory):
    reply = start(api(syncd_factory()), "2025-10-10", "2025-10-01")
    assert reply.status_code == 422
    assert reply.json()["code"] == "invalid_range"


def test_batch_without_end_date_is_422(syncd_factory):
    reply = api(syncd_factory()).post(f"{PREFIX}/sync/batch", json={"start_date": "2025-10-01"})
    assert reply.status_code == 422


def test_days_with_a_bad_date_is_422(syncd_factory):
    reply = api(syncd_factory()).get(f"{PREFIX}/days", params={"start_date": "2025-13-01", "end_date": "2025-12-31"})
    assert reply.status_code == 422
    assert "start_date" in reply.json()["message"]


# --- daemon unreachable -> 503 within the timeout ------------------------------------------------
@pytest.mark.parametrize("method, path, payload", [
    ("POST", "/sync/batch", {"start_date": "2025-10-01", "end_date": "2025-10-10"}),
    ("GET", "/status", None),
    ("GET", "/history", None),
    ("GET", "/days?start_date=2025-10-01&end_date=2025-10-31", None),
    ("POST", "/cancel", None),
])
def test_dead_endpoint_is_503_within_the_client_timeout(method, path, payload):
    http = TestClient(create_app(DEAD_ENDPOINT, timeout=0.5))
    began = time.monotonic()
    reply = http.request(method, PREFIX + path, json=payload)
    elapsed = time.monotonic() - began
    assert reply.status_code == 503
    body = reply.json()
    assert body["code"] == "unreachable"
    assert DEAD_ENDPOINT in body["message"]
    assert 0.4 < elapsed < 5.0  # the 0.5 s client timeout, not the transport's own


def test_waiting_on_a_dead_daemon_blocks_no_other_request():
    """Six requests wait out the client timeout on a dead daemon; the page is served while all six still
    wait (an order of events, not a time), and the six end side by side (not one timeout after another)."""
    timeout_s = 4.0
    app = create_app(DEAD_ENDPOINT, timeout=timeout_s)
    with serve(app) as base, ThreadPoolExecutor(8) as pool:
        began = time.monotonic()
        stuck = [pool.submit(httpx.get, f"{base}{PREFIX}/status", timeout=30) for _ in range(6)]
        page = httpx.get(base + "/", timeout=10)
        still_waiting = sum(not future.done() for future in stuck)
        replies = [future.result() for future in stuck]
        all_elapsed = time.monotonic() - began
    assert page.status_code == 200
    assert still_waiting == 6
    assert [reply.status_code for reply in replies] == [503] * 6
    assert all_elapsed < timeout_s * 3  # one after another would take six timeouts


# --- status, history, days, cancel ---------------------------------------------------------------
def test_status_shows_the_running_task_then_idle_with_the_last_run(syncd_factory):
    daemon = syncd_factory(SLOW)
    http = api(daemon)
    run_id = start(http, "2025-10-09", "2025-10-15").json()["run_id"]
    running = http.get(f"{PREFIX}/status").json()
    assert running["status"] == "ok"
    assert running["state"] == "running"
    assert running["current_task"]["run_id"] == run_id
    daemon.wait_idle()
    idle = http.get(f"{PREFIX}/status").json()
    assert (idle["state"], idle["current_task"]) == ("idle", None)
    assert idle["last_run"]["run_id"] == run_id
    assert idle["last_run"]["status"] == "succeeded"


def test_history_lists_finished_runs_up_to_limit(syncd_factory):
    daemon = syncd_factory()
    http = api(daemon)
    ids = set()
    for day in ("2025-09-22", "2025-09-23"):
        ids.add(start(http, day, day).json()["run_id"])
        daemon.wait_idle()
    limited = http.get(f"{PREFIX}/history", params={"limit": 1}).json()
    assert limited["status"] == "ok"
    assert len(limited["runs"]) == 1
    runs = http.get(f"{PREFIX}/history").json()["runs"]
    # (order is syncd's: newest first, but two runs started within one second tie on started_at)
    assert {run["run_id"] for run in runs} == ids
    assert {run["status"] for run in runs} == {"succeeded"}


def test_history_limit_out_of_bounds_is_422(syncd_factory):
    assert api(syncd_factory()).get(f"{PREFIX}/history", params={"limit": 0}).status_code == 422


def test_days_reports_every_calendar_day_with_its_status(syncd_factory):
    daemon = syncd_factory({"source": {"demo": {"fail_dates": ["2025-09-24"]}}})
    http = api(daemon)
    start(http, "2025-09-22", "2025-09-26")
    daemon.wait_idle()
    body = http.get(f"{PREFIX}/days", params={"start_date": "2025-09-22", "end_date": "2025-09-30"}).json()
    statuses = {day["date"]: day["status"] for day in body["days"]}
    assert body["status"] == "ok"
    assert len(statuses) == 9
    assert statuses["2025-09-23"] == "success"
    assert statuses["2025-09-24"] == "failed"
    assert statuses["2025-09-27"] == "skipped"  # a Saturday
    assert statuses["2025-09-29"] == "pending"  # a trading day never synced


def test_cancel_stops_the_running_run(syncd_factory):
    daemon = syncd_factory(SLOW)
    http = api(daemon)
    run_id = start(http, "2025-09-01", "2025-09-30").json()["run_id"]
    reply = http.post(f"{PREFIX}/cancel", json={"run_id": run_id})
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "run_id": run_id, "state": "cancelling"}
    assert daemon.wait_idle().last_run.status == "cancelled"


def test_cancel_without_a_body_cancels_whatever_runs(syncd_factory):
    daemon = syncd_factory(SLOW)
    http = api(daemon)
    run_id = start(http, "2025-09-01", "2025-09-30").json()["run_id"]
    reply = http.post(f"{PREFIX}/cancel")
    assert (reply.status_code, reply.json()["run_id"]) == (200, run_id)
    daemon.wait_idle()


def test_cancel_with_nothing_running_is_409_not_running(syncd_factory):
    reply = api(syncd_factory()).post(f"{PREFIX}/cancel")
    assert reply.status_code == 409
    assert reply.json() == {"status": "error", "code": "not_running", "message": "no sync is running"}


def test_cancel_of_another_run_id_is_409_and_the_run_goes_on(syncd_factory):
    daemon = syncd_factory(SLOW)
    http = api(daemon)
    start(http, "2025-09-01", "2025-09-30")
    reply = http.post(f"{PREFIX}/cancel", json={"run_id": "not-this-one"})
    assert reply.status_code == 409
    assert reply.json()["code"] == "not_running"
    assert http.get(f"{PREFIX}/status").json()["state"] == "running"
    http.post(f"{PREFIX}/cancel")


# --- configuration -------------------------------------------------------------------------------
def test_create_app_reads_SYNCD_ENDPOINT(syncd_factory, monkeypatch):
    daemon = syncd_factory()
    monkeypatch.setenv("SYNCD_ENDPOINT", daemon.endpoint)
    reply = TestClient(create_app()).get(f"{PREFIX}/status")
    assert reply.status_code == 200
    assert reply.json()["daemon"]["pid"] == daemon.proc.pid


def test_create_app_without_any_endpoint_refuses_to_start(monkeypatch):
    monkeypatch.delenv("SYNCD_ENDPOINT", raising=False)
    with pytest.raises(ValueError, match="SYNCD_ENDPOINT"):
        create_app()


def test_router_mounts_into_an_existing_app_configured_with_configure(syncd_factory):
    daemon = syncd_factory()
    app = FastAPI()
    configure(app, endpoint=daemon.endpoint, timeout=2.0)
    app.include_router(router, prefix="/ops/sync")
    http = TestClient(app)
    assert http.get("/ops/sync/status").json()["state"] == "idle"
    page = http.get("/ops/sync/page")
    assert page.status_code == 200
    assert '<meta name="syncd-api" content="/ops/sync">' in page.text


def test_unconfigured_router_falls_back_to_SYNCD_ENDPOINT_per_call(syncd_factory, monkeypatch):
    app = FastAPI()
    app.include_router(router, prefix=PREFIX)
    monkeypatch.delenv("SYNCD_ENDPOINT", raising=False)
    missing = TestClient(app).get(f"{PREFIX}/status")
    assert missing.status_code == 503
    assert missing.json()["code"] == "not_configured"
    monkeypatch.setenv("SYNCD_ENDPOINT", syncd_factory().endpoint)
    assert TestClient(app).get(f"{PREFIX}/status").json()["state"] == "idle"


def test_status_page_is_served_at_the_root_and_talks_to_the_prefix():
    page = TestClient(create_app(DEAD_ENDPOINT)).get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert f'<meta name="syncd-api" content="{PREFIX}">' in page.text


# --- authentication --------------------------------------------------------------------------------
TOKEN = "s3cret-token"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer"}])
@pytest.mark.parametrize("method, path", [("GET", "/status"), ("GET", "/history"), ("POST", "/cancel"),
                                          ("GET", "/days?start_date=2025-10-01&end_date=2025-10-31"),
                                          ("POST", "/sync/batch")])
def test_with_a_token_every_api_call_without_it_is_401(method, path, headers):
    http = TestClient(create_app(DEAD_ENDPOINT, timeout=0.5, token=TOKEN))  # past the guard it would be 503
    reply = http.request(method, PREFIX + path, headers=headers, json={"start_date": "2025-10-09", "end_date": "2025-10-09"})
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")


def test_a_start_without_the_token_starts_nothing(syncd_factory):
    daemon = syncd_factory()
    reply = start(TestClient(create_app(daemon.endpoint, token=TOKEN)), "2025-10-09", "2025-10-09")
    assert reply.status_code == 401
    assert daemon.client().history() == []


def test_with_the_token_the_api_answers(syncd_factory):
    daemon = syncd_factory()
    http = TestClient(create_app(daemon.endpoint, token=TOKEN), headers={"Authorization": f"Bearer {TOKEN}"})
    assert http.get(f"{PREFIX}/status").json()["state"] == "idle"
    assert start(http, "2025-10-09", "2025-10-09").status_code == 200
    assert daemon.wait_idle().last_run.status == "succeeded"


def test_the_token_comes_from_SYNCD_WEB_TOKEN(syncd_factory, monkeypatch):
    monkeypatch.setenv("SYNCD_WEB_TOKEN", TOKEN)
    http = TestClient(create_app(syncd_factory().endpoint))
    assert http.get(f"{PREFIX}/status").status_code == 401
    assert http.get(f"{PREFIX}/status", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_without_a_token_the_api_is_open(syncd_factory, monkeypatch):
    monkeypatch.delenv("SYNCD_WEB_TOKEN", raising=False)
    assert TestClient(create_app(syncd_factory().endpoint)).get(f"{PREFIX}/status").status_code == 200


def test_the_page_and_favicon_need_no_token():
    http = TestClient(create_app(DEAD_ENDPOINT, token=TOKEN))
    assert http.get("/").status_code == 200
    assert http.get(f"{PREFIX}/page").status_code == 200
    icon = http.get("/favicon.ico")
    assert (icon.status_code, icon.headers["content-type"]) == (200, "image/svg+xml")


def test_a_host_app_guards_the_router_with_its_own_dependencies(syncd_factory):
    from fastapi import Depends, Header, HTTPException

    def host_auth(x_api_key: str = Header(default="")) -> None:  # the host app's own scheme
        if x_api_key != "host-key":
            raise HTTPException(403, "forbidden")

    app = FastAPI()
    configure(app, endpoint=syncd_factory().endpoint)
    app.include_router(router, prefix=PREFIX, dependencies=[Depends(host_auth)])
    http = TestClient(app)
    assert http.get(f"{PREFIX}/status").status_code == 403
    assert http.get(f"{PREFIX}/status", headers={"X-API-Key": "host-key"}).json()["state"] == "idle"


def test_page_language_follows_accept_language():
    http = TestClient(create_app(DEAD_ENDPOINT))
    assert '<html lang="zh">' in http.get("/", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}).text
    assert '<html lang="en">' in http.get("/", headers={"Accept-Language": "en-US,en;q=0.9"}).text
    assert '<html lang="en">' in http.get("/", headers={"Accept-Language": "zh;q=0.5, en;q=0.8"}).text
    assert '<html lang="en">' in http.get("/", headers={"Accept-Language": "fr-FR"}).text
    assert '<html lang="zh">' in http.get("/", headers={"Accept-Language": "fr, zh-TW;q=0.7"}).text
