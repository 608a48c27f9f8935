"""Benchmark 2, the control plane: status and rejected-start latency from 20 concurrent clients during a sync.

Each client is its own process with its own SyncClient (so its own REQ sockets), as 20
web workers or CLI users would be. All clients wait on a barrier, then each sends
`requests` requests alternating `status` and a `start` that is rejected busy, timing each
call end to end (encode, socket, the daemon's reply, decode). Two loads: paced (each
client every 50 ms, spread over the period: 400 requests/s in all, far above a status page
polling every second) and saturating (back to back, no think time). The paced `status` on
the idle daemon is the reference. A full-market sync runs at full speed meanwhile; its
rows/s with and without the clients is reported too. (An earlier version also measured a
what-if daemon with a 0.5 ms GIL switch interval; syncd now sets that itself.)
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import random
import time
from typing import Any

import zmq

from syncctl import SyncClient, SyncdBusy, SyncdError
from syncd.protocol import Status, encode_request

from .harness import (
    Postgres,
    Syncd,
    cpu_seconds,
    emit,
    note,
    percentile,
    print_table,
    syncd_config,
)

CLIENTS = 20
LONG_RANGE = (dt.date(2010, 1, 1), dt.date(2024, 12, 31))  # far longer than the measurement: cancelled after


PACED_PERIOD_S = 0.05  # paced clients: each sends a request every 50 ms (20 clients: 400 requests/s)
# syncd itself now sets a 0.5 ms GIL switch interval (the what-if this file used to measure)
VARIANTS = (("syncd", None),)


def run(pg: Postgres, requests: int, clients: int = CLIENTS) -> dict[str, Any]:
    note(f"control: {clients} client processes x {requests} requests, idle and during a full-speed sync")
    measured = {label: _measure_daemon(pg, requests, clients, switch) for label, switch in VARIANTS}
    return _report(measured, clients, requests)


def _measure_daemon(pg: Postgres, requests: int, clients: int, switch_interval_s: float | None) -> dict[str, Any]:
    with pg.database() as dsn, Syncd(syncd_config(dsn), switch_interval_s=switch_interval_s) as daemon:
        out: dict[str, Any] = {"idle": _burst(daemon.endpoint, clients, requests, ("status",), PACED_PERIOD_S)}
        out["per_call_cpu"] = _per_call_cpu(daemon) if switch_interval_s is None else None
        client = daemon.client()
        run_id = client.start(*LONG_RANGE, requested_by="bench").run_id
        _wait_rows(client, 5 * 5300)
        out["sync_alone"] = _rows_rate(client, 3.0)
        for phase, period in (("paced", PACED_PERIOD_S), ("saturating", 0.0)):
            before = _progress(client)
            out[phase] = _burst(daemon.endpoint, clients, requests, ("status", "start"), period)
            after = _progress(client)
            out[f"sync_{phase}"] = (after[1] - before[1]) / (after[0] - before[0])
        client.cancel(run_id)
        _wait_idle(client)
    return out


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
        errors += sum(len(m[p]["error"]) for p in ("idle", "paced", "saturating"))
        for label, samples in (("status, idle, paced", m["idle"]["status"]),
                               ("status, during sync, paced", m["paced"]["status"]),
                               ("rejected start, during sync, paced", m["paced"]["start"]),
                               ("status, during sync, saturating", m["saturating"]["status"]),
                               ("rejected start, during sync, saturating", m["saturating"]["start"])):
            s = _stats(samples)
            rows.append((f"{variant}: {label}", len(samples), s["p50"], s["p90"], s["p99"], s["max"]))
        sync_rows.append((variant, m["sync_alone"], m["sync_paced"], m["sync_saturating"]))
    print_table(f"Control plane: {clients} concurrent client processes, latency in ms; paced = each client every "
                f"{PACED_PERIOD_S * 1000:.0f} ms, saturating = back to back (errors: {errors})",
                ("daemon: request, load", "n", "p50", "p90", "p99", "max"), rows)
    print_table("One client, idle daemon: cost of a status call, ms (CPU from /proc, 10 ms ticks over 1,000 calls)",
                ("client", "wall", "client CPU", "daemon CPU"), measured[VARIANTS[0][0]]["per_call_cpu"])
    print_table("The sync's rows/s meanwhile", ("daemon", "alone", "paced clients", "saturating clients"), sync_rows)
    base = measured[VARIANTS[0][0]]

    def p99(m: dict[str, Any], phase: str) -> float:
        return max(percentile(m[phase]["status"], 99), percentile(m[phase]["start"], 99))

    result = {
        "clients": clients, "requests_per_client": requests, "paced_period_ms": PACED_PERIOD_S * 1000,
        "status_ms": _stats(base["paced"]["status"]), "rejected_start_ms": _stats(base["paced"]["start"]),
        "idle_status_ms": _stats(base["idle"]["status"]),
        "saturating_status_ms": _stats(base["saturating"]["status"]),
        "saturating_rejected_start_ms": _stats(base["saturating"]["start"]),
        "p99_during_sync_vs_idle": round(p99(base, "paced") / percentile(base["idle"]["status"], 99), 2),
        "daemon_cpu_per_call_bare_socket_vs_syncclient": round(
            base["per_call_cpu"][1][3] / base["per_call_cpu"][0][3], 2),
        "sync_rate_paced_clients_vs_alone": round(base["sync_paced"] / base["sync_alone"], 3),
        "errors": errors,
        "goal_p99_10ms": p99(base, "paced") <= 10.0,
        "goal_p99_10ms_saturating": p99(base, "saturating") <= 10.0,
    }
    return emit("control", result)


def _burst(endpoint: str, clients: int, requests: int, ops: tuple[str, ...], period_s: float) -> dict[str, list[float]]:
    """Run the clients to completion; latencies in ms by op, plus 'error' entries."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(clients + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_client, args=(endpoint, requests, ops, period_s, barrier, results), daemon=True)
             for _ in range(clients)]
    for proc in procs:
        proc.start()
    barrier.wait(timeout=120)
    merged: dict[str, list[float]] = {"status": [], "start": [], "error": []}
    for _ in procs:
        for op, values in results.get(timeout=600).items():
            merged[op] += values
    for proc in procs:
        proc.join(10)
    return merged


def _client(endpoint: str, requests: int, ops: tuple[str, ...], period_s: float, barrier: Any, results: Any) -> None:
    client = SyncClient(endpoint, timeout=5.0)
    client.ping()  # connect once before the clock starts
    out: dict[str, list[float]] = {"status": [], "start": [], "error": []}
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

