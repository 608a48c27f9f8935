"""Benchmark 2, the control plane: status and rejected-start latency while a full-speed sync runs.

Four loads, each timing every call end to end (encode, socket, the daemon's reply, decode):
- one client process polling `status` 20 times a second (a status page, a monitor): the
  daemon's own responsiveness, with nothing else competing for the machine but the sync;
- 20 client processes, each its own SyncClient (so its own REQ sockets), as 20 web workers or
  CLI users would be, alternating `status` and a `start` that is rejected busy: paced (each
  client every 50 ms, spread over the period: 400 requests/s in all) and saturating (back to
  back, no think time); the paced `status` on the idle daemon is the reference;
- 50 threads of one process sharing one SyncClient, 200 requests each, back to back, in
  tests/test_fault_protocol.py's mix (status, ping, history, days, and starts refused busy):
  every request must be answered. Beside it, the same threads with each its own `history`
  limit and `days` range (so no two of their database reads are alike: syncd answers
  identical requests waiting together with one reply), and the same threads sending the
  same frames to a bare ZeroMQ echo process instead of syncd (the machine's floor for that
  client).
A full-market sync runs at full speed meanwhile; its rows/s with and without the clients is
reported too.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
import uuid
from typing import Any

import zmq

from syncctl import SyncClient, SyncdBusy, SyncdError
from syncd.protocol import Days, History, Ping, Request, Start, Status, encode_request

from .harness import (
    Postgres,
    Syncd,
    client_processes,
    cpu_seconds,
    emit,
    note,
    percentile,
    print_table,
    syncd_config,
)

CLIENTS = 20
LONG_RANGE = (dt.date(2000, 1, 1), dt.date(2024, 12, 31))  # far longer than the measurement: cancelled after
POLL_PERIOD_S = 0.05   # the one polling client: 20 requests a second
LOAD_THREADS, LOAD_REQUESTS = 50, 200
LOAD_MIX = (("status", 40), ("ping", 25), ("history", 17), ("days", 16), ("start", 2))  # test_fault_protocol's


PACED_PERIOD_S = 0.05  # paced clients: each sends a request every 50 ms (20 clients: 400 requests/s)
# syncd itself now sets a 0.5 ms GIL switch interval (the what-if this file used to measure)
VARIANTS = (("syncd", None),)


def run(pg: Postgres, requests: int, clients: int = CLIENTS, poll_seconds: float = 30.0) -> dict[str, Any]:
    note(f"control: one client polling status every {POLL_PERIOD_S * 1000:.0f} ms for {poll_seconds:g} s; {clients} client "
         f"processes x {requests} requests; {LOAD_THREADS} threads x {LOAD_REQUESTS} requests; idle and during a full-speed sync")
    measured = {label: _measure_daemon(pg, requests, clients, switch, poll_seconds) for label, switch in VARIANTS}
    return _report(measured, clients, requests)


def _measure_daemon(pg: Postgres, requests: int, clients: int, switch_interval_s: float | None,
                    poll_seconds: float) -> dict[str, Any]:
    with pg.database() as dsn, Syncd(syncd_config(dsn), switch_interval_s=switch_interval_s) as daemon:
        out: dict[str, Any] = {"idle": _burst(daemon.endpoint, clients, requests, ("status",), PACED_PERIOD_S)}
        out["per_call_cpu"] = _per_call_cpu(daemon) if switch_interval_s is None else None
        echo = EchoServer(daemon.folder / "echo.sock")
        out["poll_idle"] = _burst(daemon.endpoint, 1, max(40, int(poll_seconds / POLL_PERIOD_S) // 2), ("status", "echo"),
                                  POLL_PERIOD_S / 2, echo.endpoint)
        client = daemon.client()
        run_id = client.start(*LONG_RANGE, requested_by="bench").run_id
        _wait_rows(client, 5 * 5300)
        out["sync_alone"] = _rows_rate(client, 3.0)
        phases = (("poll", 1, 2 * int(poll_seconds / POLL_PERIOD_S), ("status", "echo"), POLL_PERIOD_S / 2),
                  ("paced", clients, requests, ("status", "start"), PACED_PERIOD_S),
                  ("saturating", clients, requests, ("status", "start"), 0.0))
        for phase, n, count, ops, period in phases:
            before = _progress(client)
            out[phase] = _burst(daemon.endpoint, n, count, ops, period, echo.endpoint)
            after = _progress(client)
            out[f"sync_{phase}"] = (after[1] - before[1]) / (after[0] - before[0])
        before = _progress(client)
        out["load"] = _threads_load(daemon.endpoint, run_id)
        after = _progress(client)
        out["sync_load"] = (after[1] - before[1]) / (after[0] - before[0])
        out["load_distinct"] = _threads_load(daemon.endpoint, run_id, distinct=True)
        out["load_echo"] = _threads_load(echo.endpoint, run_id, echo=True)
        if _current_run(client) != run_id:
            raise RuntimeError("the sync ended during the measurement: make LONG_RANGE longer")
        client.cancel(run_id)
        _wait_idle(client)
        echo.close()
    return out


class EchoServer:
    """The machine's floor for a request: a bare ZeroMQ REP socket in a process of its own, echoing each
    frame at once (no syncd, no Python work), polled by the same client at the same pace as syncd."""

    def __init__(self, path: Any) -> None:
        self.endpoint = f"ipc://{path}"
        self._proc = client_processes().Process(target=_echo, args=(self.endpoint,), daemon=True)
        self._proc.start()

    def close(self) -> None:
        self._proc.terminate()
        self._proc.join(5)


def _echo(endpoint: str) -> None:
    rep = zmq.Context.instance().socket(zmq.REP)
    rep.bind(endpoint)
    while True:
        rep.send(rep.recv())


def _current_run(client: SyncClient) -> str | None:
    task = client.status().current_task
    return task.run_id if task else None


def _threads_load(endpoint: str, run_id: str, *, distinct: bool = False, echo: bool = False) -> dict[str, Any]:
    """LOAD_THREADS threads sharing one SyncClient (one REQ socket per thread), LOAD_REQUESTS each, back to back.
    `distinct`: each thread its own history limit and days range. `echo`: the same frames sent with send_raw to
    a bare echo (no reply to decode)."""
    shared = SyncClient(endpoint, timeout=10.0)
    barrier = threading.Barrier(LOAD_THREADS)
    latencies: list[list[float]] = [[] for _ in range(LOAD_THREADS)]
    lost: list[str] = []
    kinds, weights = zip(*LOAD_MIX, strict=True)

    def call(kind: str, index: int) -> None:
        limit, day = (1 + index % 40, dt.date(2024, 1, 2) + dt.timedelta(days=index)) if distinct else (5, dt.date(2024, 6, 3))
        if echo:
            shared.send_raw(encode_request(_request(kind, limit, day)))
        elif kind == "status":
            shared.status()
        elif kind == "ping":
            shared.ping()
        elif kind == "history":
            shared.history(limit=limit)
        elif kind == "days":
            shared.days(day, day + dt.timedelta(days=30))
        else:
            try:
                shared.start(*LONG_RANGE, task_type="web_batch")
                lost.append("a start was admitted during the run")
            except SyncdBusy:
                pass

    def worker(index: int) -> None:
        rng = random.Random(index)
        barrier.wait()
        for _ in range(LOAD_REQUESTS):
            kind = rng.choices(kinds, weights)[0]
            began = time.perf_counter()
            try:
                call(kind, index)
            except Exception as exc:  # noqa: BLE001 - a loss to count
                lost.append(f"{kind}: {type(exc).__name__}: {exc}")
                continue
            latencies[index].append((time.perf_counter() - began) * 1000)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(LOAD_THREADS)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    wall = time.perf_counter() - began
    shared.close()
    flat = [x for per in latencies for x in per]
    return {"latencies": flat, "lost": lost, "wall": wall}


def _request(kind: str, limit: int, day: dt.date) -> Request:
    """The request a load thread sends for `kind` (what SyncClient would encode)."""
    if kind == "history":
        return History(limit=limit)
    if kind == "days":
        return Days(start_date=day, end_date=day + dt.timedelta(days=30))
    if kind == "start":
        return Start(start_date=LONG_RANGE[0], end_date=LONG_RANGE[1], task_type="web_batch", request_id=uuid.uuid4().hex)
    return Ping() if kind == "ping" else Status()


def _per_call_cpu(daemon: Syncd, calls: int = 1000) -> list[tuple[str, float, float, float]]:
    """CPU per `status` call, in ms, in this process and in the idle daemon: SyncClient vs a kept REQ socket."""
    client = daemon.client()
    frame = encode_request(Status())
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.endpoint)

    def kept_socket() -> None:
        sock.send(frame)
        sock.recv()

    out = []
    try:
        for label, call in (("SyncClient (one REQ socket per thread)", client.status), ("a bare REQ socket kept", kept_socket)):
            call()
            d0, c0, t0 = cpu_seconds(daemon.pid), time.process_time(), time.perf_counter()
            for _ in range(calls):
                call()
            out.append((label, (time.perf_counter() - t0) / calls * 1000, (time.process_time() - c0) / calls * 1000,
                        (cpu_seconds(daemon.pid) - d0) / calls * 1000))
    finally:
        sock.close(linger=0)
    return out


def _stats(samples: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(samples, 50), 2), "p90": round(percentile(samples, 90), 2),
            "p99": round(percentile(samples, 99), 2), "max": round(max(samples), 2)}


def _report(measured: dict[str, dict[str, Any]], clients: int, requests: int) -> dict[str, Any]:
    rows, sync_rows, errors = [], [], 0
    for variant, m in measured.items():
        errors += sum(len(m[p]["error"]) for p in ("idle", "poll_idle", "poll", "paced", "saturating"))
        for label, samples in ((f"one client, status every {POLL_PERIOD_S * 1000:.0f} ms, idle", m["poll_idle"]["status"]),
                               ("  the same client, a bare zmq echo between (the machine's floor)", m["poll_idle"]["echo"]),
                               (f"one client, status every {POLL_PERIOD_S * 1000:.0f} ms, during sync", m["poll"]["status"]),
                               ("  the same client, a bare zmq echo between (the machine's floor)", m["poll"]["echo"]),
                               (f"{clients} clients: status, idle, paced", m["idle"]["status"]),
                               (f"{clients} clients: status, during sync, paced", m["paced"]["status"]),
                               (f"{clients} clients: rejected start, during sync, paced", m["paced"]["start"]),
                               (f"{clients} clients: status, during sync, saturating", m["saturating"]["status"]),
                               (f"{clients} clients: rejected start, during sync, saturating", m["saturating"]["start"]),
                               (f"{LOAD_THREADS} threads x {LOAD_REQUESTS}, mixed ops, during sync", m["load"]["latencies"]),
                               ("  the same, each thread its own history limit and days range", m["load_distinct"]["latencies"]),
                               ("  the same threads and frames, a bare zmq echo instead (the floor)", m["load_echo"]["latencies"])):
            s = _stats(samples)
            rows.append((f"{variant}: {label}", len(samples), s["p50"], s["p90"], s["p99"], s["max"]))
        sync_rows.append((variant, m["sync_alone"], m["sync_poll"], m["sync_paced"], m["sync_saturating"], m["sync_load"]))
    print_table(f"Control plane: latency in ms; paced = each client every {PACED_PERIOD_S * 1000:.0f} ms, saturating = back "
                f"to back (errors: {errors})", ("daemon: request, load", "n", "p50", "p90", "p99", "max"), rows)
    print_table("One client, idle daemon: cost of a status call, ms (CPU from /proc, 10 ms ticks over 1,000 calls)",
                ("client", "wall", "client CPU", "daemon CPU"), measured[VARIANTS[0][0]]["per_call_cpu"])
    print_table("The sync's rows/s meanwhile", ("daemon", "alone", "one client", f"{clients} paced", f"{clients} saturating",
                                                f"{LOAD_THREADS} threads"), sync_rows)
    base = measured[VARIANTS[0][0]]
    load = base["load"]
    if load["lost"] or base["load_distinct"]["lost"]:
        note(f"lost requests: {(load['lost'] + base['load_distinct']['lost'])[:5]}")

    def p99(m: dict[str, Any], phase: str) -> float:
        return max(percentile(m[phase]["status"], 99), percentile(m[phase]["start"], 99))

    result = {
        "clients": clients, "requests_per_client": requests, "paced_period_ms": PACED_PERIOD_S * 1000,
        "one_client_status_ms": _stats(base["poll"]["status"]), "one_client_idle_status_ms": _stats(base["poll_idle"]["status"]),
        "one_client_echo_floor_ms": _stats(base["poll"]["echo"]), "one_client_idle_echo_floor_ms": _stats(base["poll_idle"]["echo"]),
        "status_ms": _stats(base["paced"]["status"]), "rejected_start_ms": _stats(base["paced"]["start"]),
        "idle_status_ms": _stats(base["idle"]["status"]),
        "saturating_status_ms": _stats(base["saturating"]["status"]),
        "saturating_rejected_start_ms": _stats(base["saturating"]["start"]),
        "threads_load_ms": _stats(load["latencies"]), "threads_load_lost": len(load["lost"]),
        "threads_load_requests_per_s": round(len(load["latencies"]) / load["wall"]),
        "threads_load_distinct_ms": _stats(base["load_distinct"]["latencies"]),
        "threads_load_distinct_lost": len(base["load_distinct"]["lost"]),
        "threads_load_distinct_requests_per_s": round(len(base["load_distinct"]["latencies"]) / base["load_distinct"]["wall"]),
        "threads_load_echo_floor_ms": _stats(base["load_echo"]["latencies"]),
        "threads_load_echo_floor_requests_per_s": round(len(base["load_echo"]["latencies"]) / base["load_echo"]["wall"]),
        "threads_load_p99_vs_echo_floor": round(percentile(load["latencies"], 99) / percentile(base["load_echo"]["latencies"], 99), 2),
        "p99_during_sync_vs_idle": round(p99(base, "paced") / percentile(base["idle"]["status"], 99), 2),
        "daemon_cpu_per_call_bare_socket_vs_syncclient": round(
            base["per_call_cpu"][1][3] / base["per_call_cpu"][0][3], 2),
        "sync_rate_paced_clients_vs_alone": round(base["sync_paced"] / base["sync_alone"], 3),
        "sync_rate_one_client_vs_alone": round(base["sync_poll"] / base["sync_alone"], 3),
        "errors": errors,
        "goal_one_client_p99_2ms": percentile(base["poll"]["status"], 99) <= 2.0,
        "goal_p99_10ms": p99(base, "paced") <= 10.0,
        "goal_threads_load_p99_20ms_none_lost": percentile(load["latencies"], 99) <= 20.0 and not load["lost"],
        "goal_p99_10ms_saturating": p99(base, "saturating") <= 10.0,
    }
    return emit("control", result)


def _burst(endpoint: str, clients: int, requests: int, ops: tuple[str, ...], period_s: float,
           echo: str | None = None) -> dict[str, list[float]]:
    """Run the clients to completion; latencies in ms by op, plus 'error' entries."""
    ctx = client_processes()
    barrier = ctx.Barrier(clients + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_client, args=(endpoint, requests, ops, period_s, barrier, results, echo), daemon=True)
             for _ in range(clients)]
    for proc in procs:
        proc.start()
    barrier.wait(timeout=120)
    merged: dict[str, list[float]] = {"status": [], "start": [], "echo": [], "error": []}
    for _ in procs:
        for op, values in results.get(timeout=600).items():
            merged[op] += values
    for proc in procs:
        proc.join(10)
    return merged


def _client(endpoint: str, requests: int, ops: tuple[str, ...], period_s: float, barrier: Any, results: Any,
            echo: str | None = None) -> None:
    client = SyncClient(endpoint, timeout=5.0)
    client.ping()  # connect once before the clock starts
    bare = None
    if echo is not None:
        bare = zmq.Context.instance().socket(zmq.REQ)
        bare.connect(echo)
        bare.send(b"ping")
        bare.recv()
    frame = encode_request(Status())
    out: dict[str, list[float]] = {"status": [], "start": [], "echo": [], "error": []}
    barrier.wait(timeout=120)
    begin = time.perf_counter() + random.random() * period_s  # clients spread over the period, not in lockstep
    for i in range(requests):
        op = ops[i % len(ops)]
        if period_s and (wait := begin + i * period_s - time.perf_counter()) > 0:
            time.sleep(wait)
        started = time.perf_counter()
        try:
            if op == "status":
                client.status()
            elif op == "echo" and bare is not None:
                bare.send(frame)  # what a status request weighs, answered by nothing but ZeroMQ
                bare.recv()
            else:
                client.start(LONG_RANGE[0], LONG_RANGE[1], requested_by="bench-client")
                out["error"].append(-1.0)  # a start that was not rejected: nothing should be idle now
                continue
        except SyncdBusy:
            pass
        except SyncdError:
            out["error"].append((time.perf_counter() - started) * 1000)
            continue
        out[op].append((time.perf_counter() - started) * 1000)
    results.put(out)


def _progress(client: SyncClient) -> tuple[float, int]:
    task = client.status().current_task
    return time.perf_counter(), task.rows if task else 0


def _rows_rate(client: SyncClient, seconds: float) -> float:
    t0, r0 = _progress(client)
    time.sleep(seconds)
    t1, r1 = _progress(client)
    return (r1 - r0) / (t1 - t0)


def _wait_rows(client: SyncClient, rows: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while _progress(client)[1] < rows:
        if time.monotonic() > deadline:
            raise RuntimeError("the sync did not get going")
        time.sleep(0.05)


def _wait_idle(client: SyncClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.status().state != "idle":
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon did not become idle after cancel")
        time.sleep(0.05)

