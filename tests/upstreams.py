"""Local servers (loopback only) that play the upstream services, well or badly.

`HttpUpstream` answers HTTP through a routing function; `BaostockServer` speaks baostock's
framed TCP protocol. Both count what they were asked and can misbehave, for every request
or only for requests a predicate picks, the way real services do:
"close" (close the socket without an answer), "half_close" (shut our side, keep reading),
"stall" (accept and never answer), "garbage" (bytes that are not the protocol), and for
HTTP "403", "456", "empty" (a 200 with no body: a ban as Eastmoney gives it).

The routes at the bottom serve tests/market.py's market as akshare (through its relay),
Tushare and baostock see it.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from market import (
    BAOSTOCK_DAILY_FIELDS,
    BAOSTOCK_SPLIT,
    Market,
    baostock_message,
    baostock_record,
    bse_list,
    eastmoney_clist,
    eastmoney_kline,
    sina_calendar_js,
    sina_hfq_js,
    sse_list,
    szse_xlsx,
    ts_code,
    tushare_answer,
    tushare_daily,
)

MISBEHAVIOURS = ("close", "half_close", "stall", "garbage", "403", "456", "empty")


@dataclass
class Request:
    method: str
    host: str      # the first path segment under the relay (the original host)
    path: str
    query: dict[str, str]
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass
class Reply:
    body: bytes | str | dict[str, Any] | list[Any]
    status: int = 200
    content_type: str = "application/json"

    def payload(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body, ensure_ascii=False).encode()


@dataclass
class Faults:
    """Which requests misbehave and how: `mode` for those `when` picks (all when None), `times` of them (-1: always)."""

    mode: str | None = None
    when: Callable[[Any], bool] | None = None
    times: int = -1
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pick(self, request: Any) -> str | None:
        with self.lock:
            if self.mode is None or self.times == 0 or (self.when is not None and not self.when(request)):
                return None
            if self.times > 0:
                self.times -= 1
            return self.mode


class _Stoppable:
    def __init__(self) -> None:
        self.stopped = threading.Event()
        self.faults = Faults()
        self.requests: list[Any] = []
        self._lock = threading.Lock()

    def misbehave(self, mode: str | None, when: Callable[[Any], bool] | None = None, times: int = -1) -> None:
        assert mode is None or mode in MISBEHAVIOURS, mode
        self.faults = Faults(mode, when, times)

    def record(self, request: Any) -> None:
        with self._lock:
            self.requests.append(request)

    def count(self, predicate: Callable[[Any], bool] = lambda _: True) -> int:
        with self._lock:
            return sum(1 for request in self.requests if predicate(request))

    def serve(self, server: socketserver.TCPServer) -> None:
        """Answer on `server` (one daemon thread per connection) from a thread of its own until `stop`."""
        self.server = server
        setattr(server, "daemon_threads", True)  # noqa: B010 - ThreadingMixIn's, not TCPServer's
        self.thread = threading.Thread(target=server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


class HttpUpstream(_Stoppable):
    """A threaded HTTP server on 127.0.0.1; `route(request) -> Reply`."""

    def __init__(self, route: Callable[[Request], Reply]) -> None:
        super().__init__()
        self.route = route
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The headers and the body leave in two writes: with Nagle on, the body waits for the
            # client's delayed ACK (40 ms a request), which real servers do not cost.
            disable_nagle_algorithm = True

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                upstream._handle(self, "GET")

            def do_POST(self) -> None:
                upstream._handle(self, "POST")

        self.serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        host, _, path = parts.path.lstrip("/").partition("/")
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        request = Request(method, host, "/" + path, {k: v[-1] for k, v in parse_qs(parts.query).items()}, body)
        self.record(request)
        mode = self.faults.pick(request)
        if mode is not None and self._misbehave(handler, mode):
            return
        try:
            reply = self.route(request)
        except Exception as exc:  # a broken route answers 500, visibly
            reply = Reply({"error": repr(exc)}, status=500)
        try:
            self._send(handler, reply.status, reply.payload(), reply.content_type)
        except OSError:  # the client gave up (a killed library process): nothing to answer
            handler.close_connection = True

    def _misbehave(self, handler: BaseHTTPRequestHandler, mode: str) -> bool:
        conn = handler.connection
        handler.close_connection = True
        match mode:
            case "close":
                conn.shutdown(socket.SHUT_RDWR)
            case "half_close":
                conn.shutdown(socket.SHUT_WR)
                self.stopped.wait()
            case "stall":
                self.stopped.wait()
            case "garbage":
                conn.sendall(b"\x00\xffthis is not HTTP\r\n\r\n")
            case "403" | "456":
                self._send(handler, int(mode), b"<html>forbidden</html>", "text/html")
            case "empty":
                self._send(handler, 200, b"", "application/json")
        return True

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, payload: bytes, content_type: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)


# --- akshare's services, behind its relay ------------------------------------------------------
def akshare_route(market: Market, snapshot_day: dt.date | None = None,
                  calendar: list[dt.date] | None = None) -> Callable[[Request], Reply]:
    def route(request: Request) -> Reply:
        q = request.query
        match request.host, request.path:
            case ("push2his.eastmoney.com", "/api/qt/stock/kline/get"):
                return Reply(eastmoney_kline(market, q["secid"].split(".")[1], q["beg"], q["end"]))
            case (host, "/api/qt/clist/get") if host.endswith("push2.eastmoney.com"):
                assert snapshot_day is not None, "no snapshot day set"
                return Reply(eastmoney_clist(market, snapshot_day, int(q["pn"]), int(q["pz"])))
            case ("finance.sina.com.cn", path) if path.endswith("/hfq.js"):
                return Reply(sina_hfq_js(market, path.split("/")[-2]), content_type="application/javascript")
            case ("finance.sina.com.cn", "/realstock/company/klc_td_sh.txt"):
                return Reply(sina_calendar_js(calendar or market.days), content_type="text/plain")
            case ("query.sse.com.cn", "/sseQuery/commonQuery.do"):
                return Reply(sse_list(market, star=q["STOCK_TYPE"] == "8"))
            case ("query.sse.com.cn", "/commonQuery.do"):
                return Reply(sse_list(market, star=False, delisted=True))
            case ("www.szse.cn", "/api/report/ShowReport"):
                return Reply(szse_xlsx(market, delisted=q["CATALOGID"] == "1793_ssgs"),
                             content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
            case ("www.bse.cn", "/nqxxController/nqxxCnzq.do"):
                page = int(parse_qs(request.body.decode()).get("page", ["0"])[0])
                return Reply(bse_list(market, page), content_type="text/plain")
        return Reply({"error": f"no route for {request.host}{request.path}"}, status=404)

    return route


def is_hist(code: str | None = None) -> Callable[[Request], bool]:
    return lambda r: r.path == "/api/qt/stock/kline/get" and (code is None or r.query["secid"].endswith(code))


# --- Tushare ---------------------------------------------------------------------------------
def tushare_route(market: Market, refuse: tuple[str, ...] = (), token: str = "good-token",
                  calendar: list[dt.date] | None = None) -> Callable[[Request], Reply]:
    def route(request: Request) -> Reply:
        ask = request.json()
        api, params = ask["api_name"], ask.get("params") or {}
        if ask.get("token") != token:
            return Reply({"code": 40101, "msg": "抱歉，您输入的TOKEN无效！", "data": None})
        if api in refuse:
            return Reply({"code": 40203, "msg": "抱歉，您没有访问该接口的权限，权限的具体详情访问：https://tushare.pro/document/1?doc_id=108。",
                          "data": None})
        day = dt.datetime.strptime(params["trade_date"], "%Y%m%d").date() if "trade_date" in params else None
        match api:
            case "daily":
                return Reply(tushare_daily(market, day))  # type: ignore[arg-type]
            case "adj_factor":
                return Reply(tushare_answer(["ts_code", "trade_date", "adj_factor"],
                                            [[ts_code(s), params["trade_date"], market.factor(s.code, day)]  # type: ignore[arg-type]
                                             for s in market.listed_on(day)]))  # type: ignore[arg-type]
            case "daily_basic":
                return Reply(tushare_answer(["ts_code", "trade_date", "turnover_rate"],
                                            [[ts_code(s), params["trade_date"], bar.turnover] for s in market.stocks
                                             if (bar := market.bar(s.code, day)) is not None]))  # type: ignore[arg-type]
            case "trade_cal":
                start = dt.datetime.strptime(params["start_date"], "%Y%m%d").date()
                end = dt.datetime.strptime(params["end_date"], "%Y%m%d").date()
                open_days = set(calendar or market.days)
                known = (min(open_days), max(open_days))
                items = [[f"{d:%Y%m%d}", 1 if d in open_days else 0]
                         for d in (start + dt.timedelta(n) for n in range((end - start).days + 1))
                         if known[0] - dt.timedelta(31) <= d <= known[1] + dt.timedelta(31)]
                return Reply(tushare_answer(["cal_date", "is_open"], items))
            case "stock_basic":
                status = params.get("list_status", "L")
                chosen = [s for s in market.stocks if (s.delisted is not None) == (status == "D") and status != "P"]
                return Reply(tushare_answer(["ts_code", "name", "list_date", "delist_date"],
                                            [[ts_code(s), s.name, f"{s.listed:%Y%m%d}",
                                              f"{s.delisted:%Y%m%d}" if s.delisted else None] for s in chosen]))
        return Reply({"code": -2001, "msg": f"unknown api {api}", "data": None})

    return route


# --- baostock ---------------------------------------------------------------------------------
@dataclass
class BaostockAsk:
    kind: str          # request message type: "00" login, "02" logout, "33", "45", "95", "98"
    fields: list[str]


class BaostockServer(_Stoppable):
    """baostock's server on 127.0.0.1: login, logout, calendar, stock basics, per-stock and whole-market k-data."""

    def __init__(self, market: Market, *, market_daily_empty: set[dt.date] | None = None,
                 per_page: int = 2000) -> None:
        super().__init__()
        self.market = market
        self.market_daily_empty = market_daily_empty or set()
        self.per_page = per_page
        self.logins = 0
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._serve(self.request)

        self.serve(socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler))

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def _serve(self, conn: socket.socket) -> None:
        buffer = b""
        while not self.stopped.is_set():
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                text = line.decode()
                ask = BaostockAsk(text[8:10], text[21:].split(BAOSTOCK_SPLIT)[:-1])  # the last field is the crc32
                self.record(ask)
                mode = self.faults.pick(ask)
                if mode is not None:
                    if self._misbehave(conn, mode):
                        return
                    continue
                conn.sendall(self._answer(ask))

    def _misbehave(self, conn: socket.socket, mode: str) -> bool:
        match mode:
            case "close":
                conn.close()
            case "half_close":
                conn.shutdown(socket.SHUT_WR)
                self.stopped.wait()
            case "stall":
                self.stopped.wait()
            case "garbage":
                conn.sendall(b"\x00\xff garbage without the terminator")
                self.stopped.wait()
        return True

    def _answer(self, ask: BaostockAsk) -> bytes:
        ok = ["0", "success"]
        f = ask.fields
        match ask.kind:
            case "00":
                self.logins += 1
                return baostock_message("01", ok + ["login", f[1]])
            case "02":
                return baostock_message("03", ok + ["logout", f[1]])
            case "33":  # query_trade_dates: method, user, page, per_page, start, end
                start, end = dt.date.fromisoformat(f[4]), dt.date.fromisoformat(f[5])
                rows = [[f"{d}", "1" if d in self.market.days else "0"]
                        for d in (start + dt.timedelta(n) for n in range((end - start).days + 1))]
                return baostock_message("34", ok + ["query_trade_dates", f[1], "1", f[3], _records(rows), f[4], f[5],
                                                    "calendar_date,is_trading_day"])
            case "45":  # query_stock_basic
                rows = [[f"{s.exchange}.{s.code}", s.name, f"{s.listed}", f"{s.delisted}" if s.delisted else "", "1",
                         "0" if s.delisted else "1"] for s in self.market.stocks if s.exchange != "bj"]
                rows.append(["sh.000001", "上证综合指数", "1991-07-15", "", "2", "1"])  # an index: not a stock
                return baostock_message("46", ok + ["query_stock_basic", f[1], "1", f[3], _records(rows), f[4], f[5],
                                                    "code,code_name,ipoDate,outDate,type,status"])
            case "95":  # query_history_k_data_plus: method, user, page, per_page, code, fields, start, end, freq, adjust
                page, code = int(f[2]), f[4]
                stock = self.market.stock(code[3:])
                start, end = dt.date.fromisoformat(f[6]), dt.date.fromisoformat(f[7])
                records = [r for d in self.market.days if start <= d <= end
                           if (r := baostock_record(self.market, stock, d)) is not None]
                wanted = f[5].split(",")
                all_fields = BAOSTOCK_DAILY_FIELDS.split(",")
                rows = [[r[all_fields.index(name)] for name in wanted] for r in records]
                rows = rows[(page - 1) * self.per_page: page * self.per_page]
                return baostock_message("96", ok + ["query_history_k_data_plus", f[1], str(page), f[3], _records(rows),
                                                    code, f[5], f[6], f[7], f[8], f[9]], compressed=True)
            case "98":  # query_daily_history_k_AStock: method, user, date
                day = dt.date.fromisoformat(f[2])
                rows = [] if day in self.market_daily_empty else [
                    r for s in self.market.stocks if s.exchange != "bj"
                    if (r := baostock_record(self.market, s, day)) is not None]
                return baostock_message("99", ok + ["query_daily_history_k_AStock", f[1], _records(rows),
                                                    BAOSTOCK_DAILY_FIELDS], compressed=True)
        return baostock_message("04", ["10004019", "消息格式不正确"])


def _records(rows: list[list[str]]) -> str:
    return json.dumps({"record": rows}, ensure_ascii=False).replace(" ", "")


class FakeTime:
    """A clock and sleep for sources' pacing (`Upstream`): sleeping advances the clock at once and is recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds
            self.slept.append(seconds)

    def timing(self) -> dict[str, Any]:
        return {"clock": self.clock, "sleep": self.sleep}
