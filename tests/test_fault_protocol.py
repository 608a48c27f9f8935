"""Protocol fuzzing and load: no frame breaks the decoder or the daemon, no request is lost, a run under fire is unaffected.

Three layers, each with its figures printed (`pytest -s`):
- hypothesis properties of `syncd.protocol.decode_request` (more than 10,000 generated frames across
  four strategies): it returns a valid typed request or raises RequestError with a contract code and
  a message, never anything else;
- a live fuzz: more than 10,000 deterministic random and mutated frames through a raw REQ socket
  while a run goes on; each gets one JSON reply whose outcome is the one the decoder predicts;
- load: 50 threads x 200 requests through one shared SyncClient while a run goes on; none is lost.
After the traffic the run must end `succeeded` with every trading day and every row, and be the
only run. One set of frame generators serves hypothesis (through `draw`, so failures shrink) and
the live fuzz (through a seeded random.Random, so CI replays the same frames).
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import random
import re
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import psycopg
import pytest
import zmq
from conftest import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncctl import SyncClient, SyncdBusy
from syncd import protocol
from syncd.calendar import TradingCalendar
from syncd.protocol import (
    MAX_FRAME_BYTES,
    OPS,
    REPLY_TYPES,
    Days,
    History,
    RequestError,
    Start,
    decode_request,
    encode,
    encode_request,
)

pytestmark = pytest.mark.fault

DECODER_CODES = {"bad_request", "invalid_range"}  # what a stateless decoder may say
REQUEST_TYPES = protocol.REQUEST_TYPES  # every op the protocol declares (ops added later included)
TASK_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
HYPOTHESIS: dict[str, Any] = {"deadline": None, "derandomize": True, "database": None, "print_blob": False,
                               "suppress_health_check": list(HealthCheck)}
FUZZ_SEED = 20250301
STOCKS = 200  # conftest's BASE_CONFIG demo market


# --- one source of choices: hypothesis's draw or a seeded random.Random ------------------------
class Picker:
    """Choices for the frame generators, from hypothesis (`draw`) or from a random.Random."""

    def __init__(self, draw: Callable[[Any], Any] | None = None, rng: random.Random | None = None) -> None:
        self._draw, self._rng = draw, rng

    def int(self, lo: int, hi: int) -> int:
        return self._draw(st.integers(lo, hi)) if self._draw else self._rng.randint(lo, hi)

    def choice(self, options: Sequence[Any]) -> Any:
        return options[self.int(0, len(options) - 1)]  # integers() strategies are cached; sampled_from(list) is not

    def bytes(self, size: int) -> bytes:
        return self._draw(st.binary(min_size=size, max_size=size)) if self._draw else self._rng.randbytes(size)

    def chance(self, percent: int) -> bool:
        return self.int(0, 99) < percent


# --- frame generators ------------------------------------------------------------------------------
ODD_CHARS = ["a", "Z", "0", " ", "-", "_", ":", ".", '"', "\\", "/", "\x00", "\x1f", "\x7f", "é", "中", "股", "😀",
             "\u2028", "\ufeff", "\ud800", "\udfff", "\udbff\udfff", "\U0010ffff"]
TASK_TYPES = ["manual", "web_batch", "scheduler_daily", "scheduler_missing", "a.b:c-d_e", "x" * 64]
BAD_DATES = ["2025-02-30", "2025-02-29", "2024-02-30", "2025-13-01", "2025-00-10", "2025-04-31", "2025-01-00",
             "2025-01-32", "20250101", "2025-1-1", "2025/01/01", "2025-01-01T00:00:00", "2025-01-01Z", " 2025-01-01",
             "2025-01-01 ", "0000-01-01", "10000-01-01", "-2025-01-01", "+2025-01-01", "２０２５-０１-０１", "", "today",
             "2025-W01-1", "2025-001"]
BAD_LIMITS = [0, -1, 1001, 10**6, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**40, 1.5, 1e308, -0.0, True, False,
              None, "10", "", [], {}]
MUTATIONS = ["drop", "extra", "wrong_type", "bad_date", "bad_limit", "op", "swap_dates", "rename", "long_text"]


def text(p: Picker, max_len: int = 12) -> str:
    return "".join(p.choice(ODD_CHARS) for _ in range(p.int(0, max_len)))


def date(p: Picker) -> dt.date:
    if p.chance(90):
        return dt.date(2015, 1, 1) + dt.timedelta(days=p.int(0, 16 * 366))
    return p.choice([dt.date.min, dt.date.max, dt.date(1970, 1, 1), dt.date(2000, 2, 29), dt.date(9999, 12, 30)])


def json_value(p: Picker, depth: int = 0) -> Any:
    kind = p.int(0, 9 if depth < 3 else 7)
    if kind == 0:
        return p.choice([None, True, False])
    if kind == 1:
        return p.int(-1000, 1000)
    if kind == 2:
        return p.choice([2**63, -(2**63) - 1, 2**64, 10**300, -(10**300)])
    if kind == 3:
        return p.choice([0.5, -1e-300, 1e308, float("nan"), float("inf"), float("-inf")])
    if kind == 4:
        return p.choice(["NaN", "Infinity", "-Infinity", "1e999", "null", "true", "0x10", "9" * 400])
    if kind == 5:
        return date(p).isoformat() if p.chance(50) else p.choice(BAD_DATES)
    if kind in (6, 7):
        return text(p)
    if kind == 8:
        return [json_value(p, depth + 1) for _ in range(p.int(0, 4))]
    return {text(p, 6): json_value(p, depth + 1) for _ in range(p.int(0, 4))}


def valid_request(p: Picker, ops: Sequence[str] = OPS) -> dict[str, Any]:
    op = p.choice(list(ops))
    request: dict[str, Any] = {"op": op}
    if op == "history" and p.chance(70):
        request["limit"] = p.int(1, 1000)
    if op in ("start", "days"):
        first, second = date(p), date(p)
        if p.chance(70):  # mostly short ranges, like real ones
            second = first + dt.timedelta(days=min(p.int(0, 60), (dt.date.max - first).days))
        request["start_date"], request["end_date"] = (min(first, second).isoformat(), max(first, second).isoformat())
    if op == "start":
        for field, make in (("task_type", lambda: p.choice(TASK_TYPES)), ("requested_by", lambda: text(p, 30)),
                            ("request_id", lambda: uuid.UUID(bytes=p.bytes(16)).hex)):
            if p.chance(60):
                request[field] = make()
    if op == "cancel" and p.chance(50):
        request["run_id"] = p.choice([None, "20250101-000000-abcdef", text(p)])
    return request


def mutate_request(p: Picker, request: dict[str, Any]) -> dict[str, Any]:
    request = dict(request)
    for _ in range(p.int(1, 3)):
        kind = p.choice(MUTATIONS)
        fields = [k for k in request if k != "op"] or ["op"]
        if kind == "drop" and request:
            del request[p.choice(list(request))]
        elif kind == "extra":
            request[p.choice(["x", "opp", "limit", "run_id", "start_date", "OP", text(p, 5)])] = json_value(p)
        elif kind == "wrong_type":
            request[p.choice(fields)] = json_value(p)
        elif kind == "bad_date":
            request[p.choice(["start_date", "end_date"])] = p.choice(BAD_DATES)
        elif kind == "bad_limit":
            request["limit"] = p.choice(BAD_LIMITS)
        elif kind == "op":
            op = str(request.get("op", "ping"))
            request["op"] = p.choice([op.upper(), op.title(), f" {op}", f"{op} ", op + op, op[:-1], op[1:], op + "\x00",
                                      op.replace("a", "а"), "", "*", "ping; start", json_value(p), p.choice(OPS)])
        elif kind == "swap_dates" and "start_date" in request and "end_date" in request:
            request["start_date"], request["end_date"] = request["end_date"], request["start_date"]
        elif kind == "rename" and fields != ["op"]:
            old = p.choice(fields)
            request[old.replace("_", "-") if p.chance(50) else old.upper()] = request.pop(old)
        elif kind == "long_text":
            field = p.choice(["requested_by", "task_type", "request_id", "run_id"])
            request[field] = "x" * p.choice([0, 64, 65, 128, 129, 200, 201, 5000])  # around each length limit
    return request


def serialize(p: Picker, value: Any) -> bytes:
    """JSON text the way various clients write it, lone surrogates included as (invalid) UTF-8 bytes."""
    out = json.dumps(value, ensure_ascii=p.chance(50), allow_nan=True, separators=p.choice([(",", ":"), (", ", ": ")]))
    return out.encode("utf-8", "surrogatepass")


def mutate_bytes(p: Picker, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(p.int(1, 4)):
        kind = p.choice(["flip", "insert", "delete", "truncate", "duplicate", "special"])
        at = p.int(0, len(data))
        if kind == "flip" and data:
            at = min(at, len(data) - 1)
            data[at] ^= 1 << p.int(0, 7)
        elif kind == "insert":
            data[at:at] = p.bytes(p.int(1, 4))
        elif kind == "delete":
            del data[at:at + p.int(1, 8)]
        elif kind == "truncate":
            del data[at:]
        elif kind == "duplicate":
            data[at:at] = data[max(0, at - p.int(1, 16)):at]
        elif kind == "special":
            data[at:at] = p.choice([b"{", b"}", b"[", b"]", b'"', b":", b",", b"\\", b"\\u", b"\\ud800", b"\xff", b"\xc3",
                                    b"\xed\xa0\x80", b"\x00", b"0", b"-", b"e9999", b" ", b"null"])
    return bytes(data)


def oversized(p: Picker) -> bytes:
    size = p.int(MAX_FRAME_BYTES + 1, 4 * MAX_FRAME_BYTES)
    kind = p.int(0, 2)
    if kind == 0:  # a valid ping padded with whitespace past the limit
        return b'{"op": "ping"' + b" " * (size - 14) + b"}"
    if kind == 1:
        return b'{"op": "start", "requested_by": "' + b"x" * size + b'"}'
    return p.bytes(size)


def live_frame(p: Picker) -> bytes:
    """One frame of the live fuzz: every family above, valid requests (never cancel) mixed in."""
    roll = p.int(0, 99)
    if roll < 1:
        return oversized(p)
    if roll < 3:
        return b""
    if roll < 13:
        return p.bytes(p.int(1, 300))
    if roll < 23:
        return serialize(p, json_value(p))
    if roll < 45:
        return serialize(p, valid_request(p, ("status", "ping", "history", "days", "start")))
    if roll < 72:
        return serialize(p, mutate_request(p, valid_request(p)))
    return mutate_bytes(p, serialize(p, valid_request(p)))


# --- the decoder's property -------------------------------------------------------------------------
def check_decode(frame: bytes) -> str:
    """decode_request returns a valid typed request or raises RequestError(contract code, message); the outcome."""
    try:
        request = decode_request(frame)
    except RequestError as exc:
        assert exc.code in DECODER_CODES, (exc.code, frame[:200])
        assert isinstance(exc.message, str) and exc.message.strip(), frame[:200]
        # the reply the daemon sends must itself encode and read back as the same JSON object
        assert msgspec.json.decode(encode(exc.reply())) == {"status": "error", "code": exc.code, "message": exc.message}
        return exc.code
    assert isinstance(request, REQUEST_TYPES), type(request)
    if isinstance(request, (Start, Days)):
        assert request.start_date <= request.end_date
    if isinstance(request, History):
        assert 1 <= request.limit <= 1000
    if isinstance(request, Start):
        assert TASK_TYPE.fullmatch(request.task_type) and len(request.requested_by) <= 200
    assert decode_request(encode_request(request)) == request  # what we accept we can say back, unchanged
    return type(request).__name__.lower()


def run_property(strategy: st.SearchStrategy[bytes], examples: int, name: str) -> collections.Counter[str]:
    outcomes: collections.Counter[str] = collections.Counter()

    @settings(max_examples=examples, **HYPOTHESIS)
    @given(strategy)
    def prop(frame: bytes) -> None:
        outcomes[check_decode(frame)] += 1

    prop()
    print(f"\n[decoder fuzz] {name}: {sum(outcomes.values())} examples, outcomes {dict(outcomes.most_common())}")
    assert sum(outcomes.values()) >= examples  # hypothesis did not stop early
    return outcomes


JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**1000), 2**1000), st.floats(),
    st.text(st.characters(codec=None, exclude_categories=()), max_size=10), st.sampled_from(ODD_CHARS + BAD_DATES),
    st.dates().map(dt.date.isoformat), st.sampled_from(["NaN", "Infinity", "-0", "1e400", *OPS]),
)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.one_of(st.sampled_from(["op", "limit", "start_date", "end_date", "run_id"]),
                                                       st.text(max_size=8)), inner, max_size=4), max_leaves=10)


JSON_REQUESTS = st.fixed_dictionaries(
    {"op": st.one_of(st.sampled_from(OPS), JSON_SCALARS)},
    optional={k: JSON_SCALARS for k in ("limit", "start_date", "end_date", "run_id", "task_type", "x")})


@st.composite
def json_frames(draw: Any) -> bytes:
    return serialize(Picker(draw), draw(JSON_TOP))


JSON_TOP = st.one_of(JSON_VALUES, JSON_REQUESTS)


@st.composite
def mutated_request_frames(draw: Any) -> bytes:
    p = Picker(draw)
    return serialize(p, mutate_request(p, valid_request(p)))


@st.composite
def mutated_byte_frames(draw: Any) -> bytes:
    p = Picker(draw)
    return mutate_bytes(p, serialize(p, valid_request(p)))


RAW_BYTES = st.one_of(st.binary(max_size=512),
                      st.tuples(st.sampled_from([b"{", b'{"op":"', b'{"op":"start","start_date":"', b"[", b'"',
                                                 b"\xef\xbb\xbf{"]), st.binary(max_size=64)).map(b"".join))


def test_decoder_survives_random_bytes():
    outcomes = run_property(RAW_BYTES, 2500, "random bytes")
    assert set(outcomes) == {"bad_request"}  # nothing random is a request


def test_decoder_survives_random_json_values():
    run_property(json_frames(), 2500, "random JSON values")


def test_decoder_survives_mutated_requests():
    outcomes = run_property(mutated_request_frames(), 3000, "mutated requests")
    assert {"bad_request", "invalid_range"} <= set(outcomes)  # the mutations reach both refusals


def test_decoder_survives_byte_mutations_of_valid_frames():
    run_property(mutated_byte_frames(), 2500, "byte-mutated valid frames")


def test_decoder_refuses_known_edge_frames():
    """Regressions: bad UTF-8 inside a string escaped as UnicodeDecodeError before the fix."""
    bad_utf8 = [b'{"op":"\xff"}', b'{"op":"\xed\xa0\x80"}',
                b'{"op":"start","start_date":"2025-01-01","end_date":"2025-01-02","requested_by":"\xc3"}']
    for frame in [*bad_utf8, b'{"op":"' + b"a" * MAX_FRAME_BYTES + b'"}', b"", b"\x00", b"null", b'"ping"']:
        assert check_decode(frame) == "bad_request", frame[:60]
    assert check_decode(b'{"op":"days","start_date":"9999-12-31","end_date":"9999-12-31"}') == "days"


# --- live daemon: a long run, then traffic ----------------------------------------------------------
RUN_FROM, RUN_TO = dt.date(2025, 3, 3), dt.date(2025, 5, 30)


def start_long_run(syncd_factory: Callable[..., Any], day_delay_s: float) -> tuple[Any, SyncClient, str]:
    daemon = syncd_factory({"source": {"demo": {"day_delay_s": day_delay_s}}})
    client = daemon.client(timeout=10.0)
    run_id = client.start(RUN_FROM, RUN_TO, requested_by="fault-proto").run_id
    # The worker records the run in sync_runs a moment after `start` answers; history shows it from then on.
    wait_until(lambda: [r.run_id for r in client.history()] == [run_id], 10, what="the run in history")
    return daemon, client, run_id


def assert_still_running(client: SyncClient, run_id: str) -> None:
    status = client.status()
    assert status.state == "running" and status.current_task.run_id == run_id, \
        f"the run ended before the traffic did (size the run longer): {status.state} {status.last_run}"
    print(f"[run] still running after the traffic: {status.current_task.days_done}/{status.current_task.trading_days} days")


def assert_run_complete(daemon: Any, database: str, run_id: str) -> None:
    """The run ended succeeded with every trading day and every row, and it is the only run."""
    trading_days = len(TradingCalendar().trading_days(RUN_FROM, RUN_TO))
    status = daemon.wait_idle(timeout=90)
    last = status.last_run
    assert (last.run_id, last.status, last.days_failed) == (run_id, "succeeded", 0), last
    assert last.trading_days == last.days_done == trading_days, last
    assert last.rows == STOCKS * trading_days, last
    runs = daemon.client().history(limit=1000)
    assert [r.run_id for r in runs] == [run_id]
    days = daemon.client().days(RUN_FROM, RUN_TO)
    assert collections.Counter(d.status for d in days) == {"success": trading_days, "skipped": len(days) - trading_days}
    with psycopg.connect(database) as conn:
        rows, dates = conn.execute("SELECT count(*), count(DISTINCT trade_date) FROM daily_bars").fetchone()
        (runs_recorded,) = conn.execute("SELECT count(*) FROM sync_runs").fetchone()
    assert (rows, dates, runs_recorded) == (STOCKS * trading_days, trading_days, 1)
    print(f"[run] {run_id} succeeded: {trading_days} trading days, {rows} rows in daily_bars, 1 run in history")


def outcome(reply: dict[str, Any]) -> str:
    return "ok" if reply["status"] == "ok" else f"{reply['status']}:{reply['code']}"


def expected_outcomes(frame: bytes) -> tuple[str | None, set[str]]:
    """The op (if the frame is a request) and the outcomes the daemon may answer it with, as the decoder sees it."""
    try:
        request = decode_request(frame)
    except RequestError as exc:
        return None, {f"error:{exc.code}"}
    op = type(request).__name__.lower()
    if isinstance(request, Start):  # never a second run; ok only for our own run's retry (never generated)
        return op, {"rejected:busy", "error:invalid_range"}
    if isinstance(request, Days):  # longer than sync.max_days
        return op, {"ok", "error:invalid_range"}
    return op, {"ok"}


def test_live_daemon_answers_every_fuzzed_frame_during_a_run(syncd_factory, database):
    frames_wanted, timeout_ms = 10_000, 10_000
    daemon, client, run_id = start_long_run(syncd_factory, day_delay_s=0.4)  # 61 days: ~24 s, twice the fuzz
    picker = Picker(rng=random.Random(FUZZ_SEED))
    context = zmq.Context.instance()
    sock = context.socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.endpoint)
    sent = answered = skipped_cancels = 0
    by_outcome: collections.Counter[str] = collections.Counter()
    by_op: collections.Counter[str] = collections.Counter()
    sizes = {"empty": 0, "oversized": 0}
    began = time.perf_counter()
    try:
        while sent < frames_wanted:
            frame = live_frame(picker)
            op, allowed = expected_outcomes(frame)
            if op == "cancel":  # a valid cancel would rightly stop the run
                skipped_cancels += 1
                continue
            sizes["empty"] += frame == b""
            sizes["oversized"] += len(frame) > MAX_FRAME_BYTES
            sock.send(frame)
            sent += 1
            assert sock.poll(timeout_ms, zmq.POLLIN), f"frame {sent} got no reply within {timeout_ms} ms: {frame[:200]!r}"
            reply = msgspec.json.decode(sock.recv())
            answered += 1
            assert isinstance(reply, dict) and reply.get("status") in ("ok", "rejected", "error"), reply
            if reply["status"] != "ok":
                assert isinstance(reply.get("code"), str) and reply.get("message"), reply
            got = outcome(reply)
            assert got in allowed, f"frame {frame[:200]!r}: expected one of {allowed}, got {reply}"
            if got == "ok":
                msgspec.convert(reply, REPLY_TYPES[op])  # a well-formed reply of the op's type
            if got == "rejected:busy":
                assert reply["current_task"]["run_id"] == run_id
            by_outcome[got] += 1
            by_op[op or "refused"] += 1
        elapsed = time.perf_counter() - began
        assert_still_running(client, run_id)
    finally:
        sock.close(linger=0)
    assert daemon.proc.poll() is None
    print(f"\n[live fuzz] sent {sent} frames, answered {answered} in {elapsed:.1f} s ({answered / elapsed:.0f}/s); "
          f"{sizes['empty']} empty, {sizes['oversized']} over {MAX_FRAME_BYTES} bytes; {skipped_cancels} valid cancels not sent")
    print(f"[live fuzz] by reply: {dict(by_outcome.most_common())}")
    print(f"[live fuzz] by request: {dict(by_op.most_common())}")
    assert sent == answered >= frames_wanted
    assert by_outcome["rejected:busy"] > 0 and by_outcome["ok"] > 0 and sizes["oversized"] > 0 and sizes["empty"] > 0
    assert not daemon.events("request_failed")  # no frame reached the `internal` catch-all
    assert_run_complete(daemon, database, run_id)


def test_multipart_requests_are_refused_and_the_daemon_lives(syncd_factory):
    """Regression: a multi-part request made the REP socket raise EFSM, which ended the daemon."""
    daemon = syncd_factory()
    sock = zmq.Context.instance().socket(zmq.REQ)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(daemon.endpoint)
    try:
        for parts in ([b'{"op":"ping"}', b""], [b'{"op":"ping"}', b'{"op":"ping"}'], [b"", b"", b"x"],
                      [b'{"op":"start","start_date":"2025-03-03","end_date":"2025-03-04"}', b"more"]):
            sock.send_multipart(parts)
            assert sock.poll(5000, zmq.POLLIN), f"no reply to {parts}"
            reply = msgspec.json.decode(sock.recv())
            assert (reply["status"], reply["code"]) == ("error", "bad_request") and "frames" in reply["message"]
    finally:
        sock.close(linger=0)
    assert daemon.client().ping().pid == daemon.proc.pid
    assert daemon.client().status().last_run is None  # the multi-part start was not run


def test_load_50_clients_x_200_requests_during_a_run(syncd_factory, database):
    threads_n, per_thread = 50, 200
    daemon, _, run_id = start_long_run(syncd_factory, day_delay_s=0.2)  # 61 days: ~12 s, thrice the load
    shared = SyncClient(daemon.endpoint, timeout=10.0)  # one client, one REQ socket per thread
    barrier = threading.Barrier(threads_n)
    latencies: list[list[float]] = [[] for _ in range(threads_n)]
    kinds: list[collections.Counter[str]] = [collections.Counter() for _ in range(threads_n)]
    losses: list[str] = []

    def call(kind: str) -> None:
        if kind == "status":
            shared.status()
        elif kind == "ping":
            shared.ping()
        elif kind == "history":
            assert [r.run_id for r in shared.history(limit=5)] == [run_id]
        elif kind == "days":
            assert len(shared.days(RUN_FROM, RUN_TO)) == (RUN_TO - RUN_FROM).days + 1
        else:
            try:
                shared.start(RUN_FROM, RUN_TO, task_type="web_batch")
            except SyncdBusy as busy:
                assert busy.current_task.run_id == run_id
                return
            raise AssertionError("a second start was admitted during the run")

    def client_thread(index: int) -> None:
        rng = random.Random(FUZZ_SEED + index)
        barrier.wait()
        try:
            for _ in range(per_thread):
                kind = rng.choices(["status", "ping", "history", "days", "start"], weights=[40, 25, 17, 16, 2])[0]
                began = time.perf_counter()
                try:
                    call(kind)
                except Exception as exc:  # noqa: BLE001 - every failure is a loss to count, not to stop on
                    losses.append(f"{kind}: {type(exc).__name__}: {exc}")
                    continue
                latencies[index].append(time.perf_counter() - began)
                kinds[index][kind] += 1
        finally:
            shared.close()

    workers = [threading.Thread(target=client_thread, args=(i,), name=f"load-{i}") for i in range(threads_n)]
    began = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    wall = time.perf_counter() - began
    assert not any(worker.is_alive() for worker in workers), "a client thread hung"
    assert_still_running(daemon.client(), run_id)
    flat = sorted(x for per in latencies for x in per)
    mix = sum(kinds, collections.Counter())
    quantiles = statistics.quantiles(flat, n=100) if len(flat) > 1 else [0.0] * 99
    print(f"\n[load] {threads_n} clients x {per_thread} requests: {len(flat)} answered, {len(losses)} lost, "
          f"wall {wall:.2f} s, {len(flat) / wall:.0f} req/s")
    print(f"[load] latency p50 {quantiles[49] * 1000:.1f} ms, p99 {quantiles[98] * 1000:.1f} ms, max {flat[-1] * 1000:.1f} ms")
    print(f"[load] mix {dict(mix.most_common())}")
    assert not losses, losses[:10]
    assert len(flat) == threads_n * per_thread
    assert_run_complete(daemon, database, run_id)
