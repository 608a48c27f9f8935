"""Child side of the akshare source (runs in child.py's process): akshare's functions, plain answers.

`setup` wraps requests' transport once for the whole process (every HTTP request akshare
makes goes through `HTTPAdapter.send`, whichever session it builds): each request gets a
timeout when akshare passes none (its stock lists and Sina's calendar pass none), an answer
that looks like a ban (HTTP 403/429/456, an empty body) raises `Failure("banned")` at once
instead of a misleading parse error, and with `relay` set every request goes to
RELAY/<host>/<path> instead (an in-house relay; the tests' local servers).

Each call returns lists of plain values (dates as YYYY-MM-DD, NaN as None); the daemon maps
them onto rows. The stock lists clear every akshare cache on the way (the outer
`stock_info_a_code_name` and the three exchange lists each keep an lru_cache for the life of
the process), so every call asks the exchanges again.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from .child import Failure

BAN_STATUSES = {403, 429, 456}
# What each listing call returns, by akshare's column names: code, name, listing date, delisting date.
LISTINGS: dict[str, tuple[str, tuple[Any, ...], str, str, str, str | None]] = {
    "sh": ("stock_info_sh_name_code", ("主板A股",), "证券代码", "证券简称", "上市日期", None),
    "star": ("stock_info_sh_name_code", ("科创板",), "证券代码", "证券简称", "上市日期", None),
    "sz": ("stock_info_sz_name_code", ("A股列表",), "A股代码", "A股简称", "A股上市日期", None),
    "bj": ("stock_info_bj_name_code", (), "证券代码", "证券简称", "上市日期", None),
    "sh_delisted": ("stock_info_sh_delist", ("全部",), "公司代码", "公司简称", "上市日期", "暂停上市日期"),
    "sz_delisted": ("stock_info_sz_delist", ("终止上市公司",), "证券代码", "证券简称", "上市日期", "终止上市日期"),
}
CACHED = ("stock_info_a_code_name", "stock_info_sh_name_code", "stock_info_sz_name_code", "stock_info_bj_name_code")
HIST = ("日期", "开盘", "收盘", "最高", "最低", "成交量", "成交额", "涨跌幅", "涨跌额", "换手率")
SNAPSHOT = ("代码", "名称", "今开", "最高", "最低", "最新价", "昨收", "成交量", "成交额", "换手率", "涨跌幅")


def install_transport(relay: str, timeout_s: float) -> None:
    """Wrap HTTPAdapter.send (all sessions, akshare's own adapters included): timeout, relay, bans."""
    original = HTTPAdapter.send
    relay = relay.rstrip("/")

    def send(self: HTTPAdapter, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        host = urlsplit(request.url or "").hostname or "?"
        if relay:
            parts = urlsplit(request.url or "")
            request.url = f"{relay}/{parts.hostname}{parts.path}" + (f"?{parts.query}" if parts.query else "")
        response = original(self, request, stream=stream, timeout=_bounded(timeout, timeout_s), verify=verify,
                            cert=cert, proxies=proxies)
        if response.status_code in BAN_STATUSES:
            raise Failure("banned", f"HTTP {response.status_code} from {host}")
        if not stream and not response.content.strip():
            raise Failure("banned", f"an empty answer (HTTP {response.status_code}) from {host}")
        return response

    HTTPAdapter.send = send  # type: ignore[method-assign]


def _bounded(timeout: Any, limit: float) -> Any:
    if timeout is None:
        return (min(10.0, limit), limit)
    if isinstance(timeout, (int, float)):
        return min(float(timeout), limit)
    connect, read = timeout
    return (min(connect or limit, limit), min(read or limit, limit))


def plain(value: Any) -> Any:
    """A pandas/numpy cell -> str, float, int, or None (NaN, NaT, '-', '')."""
    if value is None:
        return None
    if isinstance(value, (dt.datetime, dt.date)):
        return (value.date() if isinstance(value, dt.datetime) else value).isoformat()
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str) and value.strip() in ("", "-", "nan", "NaT", "None"):
        return None
    if hasattr(value, "isoformat"):  # pandas Timestamp
        return value.date().isoformat()
    return value


def columns(frame: Any, names: tuple[str, ...], what: str) -> list[list[Any]]:
    """The named columns of a frame as rows of plain values; Failure("bad_answer") if one is missing."""
    if frame is None or len(frame) == 0:
        return []
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise Failure("bad_answer", f"{what}: the answer lacks column(s) {', '.join(missing)} (akshare changed?)")
    return [[plain(cell) for cell in row] for row in zip(*(frame[name].tolist() for name in names))]


class Akshare:
    def __init__(self) -> None:
        import akshare

        self.ak = akshare

    def hist(self, code: str, start: str, end: str) -> list[list[Any]]:
        """stock_zh_a_hist, raw prices (adjust=""): one row per day the stock traded in [start, end]."""
        frame = self.ak.stock_zh_a_hist(symbol=code, period="daily", start_date=start, end_date=end, adjust="")
        return columns(frame, HIST, f"stock_zh_a_hist({code})")

    def hfq_factors(self, symbol: str) -> list[list[Any]]:
        """Sina's backward-adjustment factor series (date it takes effect, factor); [] if Sina has none."""
        try:
            frame = self.ak.stock_zh_a_daily(symbol=symbol, adjust="hfq-factor")
        except ValueError as exc:
            if "not available" in str(exc):
                return []
            raise
        return sorted(row for row in columns(frame, ("date", "hfq_factor"), f"hfq factors of {symbol}")
                      if row[0] is not None)

    def snapshot(self) -> list[list[Any]]:
        return columns(self.ak.stock_zh_a_spot_em(), SNAPSHOT, "stock_zh_a_spot_em()")

    def calendar(self) -> list[str]:
        rows = columns(self.ak.tool_trade_date_hist_sina(), ("trade_date",), "tool_trade_date_hist_sina()")
        return sorted(row[0] for row in rows if row[0] is not None)

    def listing(self, which: str) -> list[list[Any]]:
        """One exchange list: (code, name, listed, delisted); every akshare list cache cleared first."""
        for name in CACHED:
            clear = getattr(getattr(self.ak, name, None), "cache_clear", None)
            if callable(clear):
                clear()
        function, args, code, name, listed, delisted = LISTINGS[which]
        frame = getattr(self.ak, function)(*args)
        wanted = (code, name, listed) + ((delisted,) if delisted else ())
        rows = columns(frame, wanted, f"{function}{args!r}")
        return [[str(row[0]).split(".")[0].zfill(6), row[1], row[2], row[3] if delisted else None] for row in rows
                if row[0] is not None]


def setup(options: dict[str, Any]) -> dict[str, Callable[..., Any]]:
    install_transport(str(options.get("relay", "")), float(options["request_timeout_s"]))
    library = Akshare()
    return {"hist": library.hist, "hfq_factors": library.hfq_factors, "snapshot": library.snapshot,
            "calendar": library.calendar, "listing": library.listing}
