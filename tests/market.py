"""A small synthetic A-share market and its answers in each upstream service's documented shape.

No session here can reach the real services, so the tests build what they answer by hand,
in the shapes the services document and the libraries parse: Eastmoney's kline and clist
JSON, Sina's hfq.js and its encoded trading calendar, the SSE/SZSE/BSE stock lists
(JSON, xlsx, JSONP), baostock's framed TCP messages, and Tushare's `{code, msg, data}`.
The market has what the issue asks the tests to cover: an ex-dividend day (600000 pays
0.50 a share on 2024-01-04, so its pre_close is not the previous close), a STAR stock
(688981), a ChiNext and a Beijing stock, a stock suspended for two days (000004), a new
listing inside the range (301589 on 2024-01-09, issue price 20.00) and a delisting
(600289: last trade 2024-01-05, off the exchange from 2024-01-08). Values are made up.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

D = dt.date
DAYS = [D(2024, 1, 2), D(2024, 1, 3), D(2024, 1, 4), D(2024, 1, 5), D(2024, 1, 8), D(2024, 1, 9),
        D(2024, 1, 10), D(2024, 1, 11), D(2024, 1, 12)]
EX_DATE = D(2024, 1, 4)
DIVIDEND = 0.50


@dataclass(frozen=True)
class Stock:
    code: str
    name: str
    listed: dt.date
    base: float                      # the close before the range (or the issue price)
    float_shares: int
    delisted: dt.date | None = None  # first day off the exchange
    suspended: frozenset[dt.date] = frozenset()

    @property
    def exchange(self) -> str:
        return "sh" if self.code.startswith("6") else "sz" if self.code.startswith(("0", "3")) else "bj"


STOCKS = [
    Stock("000001", "平安银行", D(1991, 4, 3), 9.39, 19_405_546_950),
    Stock("000004", "国华网安", D(1991, 1, 14), 17.60, 123_802_235, suspended=frozenset({D(2024, 1, 8), D(2024, 1, 9)})),
    Stock("300750", "宁德时代", D(2018, 6, 11), 163.26, 3_917_632_117),
    Stock("301589", "诺瓦星云", D(2024, 1, 9), 20.00, 30_000_000),
    Stock("600000", "浦发银行", D(1999, 11, 10), 6.58, 29_352_178_996),
    Stock("600289", "ST信通", D(1999, 11, 26), 2.51, 632_176_400, delisted=D(2024, 1, 8)),
    Stock("688981", "中芯国际", D(2020, 7, 16), 52.95, 1_984_995_762),
    Stock("830799", "艾融软件", D(2021, 11, 15), 28.40, 128_153_010),
] + [Stock(f"0020{i:02d}", f"深市{i}", D(2004, 6, 25), 5.0 + i, 500_000_000) for i in range(1, 9)]
# (the eight 0020xx stocks make SZSE's list long enough for akshare to reshape it: it does above ten rows)
MOVES = [0.0061, -0.0121, 0.0203, -0.0049, 0.0112, -0.0087, 0.0150, -0.0033, 0.0071]


@dataclass(frozen=True)
class Bar:
    day: dt.date
    open: float
    high: float
    low: float
    close: float
    pre_close: float      # the exchange's reference price
    raw_prev: float       # the previous raw close (the issue price on the listing day)
    volume: int           # shares
    amount: float         # yuan
    turnover: float       # percent
    pct: float            # against pre_close, percent


@dataclass
class Market:
    stocks: list[Stock] = field(default_factory=lambda: list(STOCKS))
    days: list[dt.date] = field(default_factory=lambda: list(DAYS))

    def __post_init__(self) -> None:
        self.bars: dict[str, list[Bar]] = {stock.code: self._bars(stock) for stock in self.stocks}

    def _bars(self, stock: Stock) -> list[Bar]:
        bars, prev = [], stock.base
        for i, day in enumerate(self.days):
            if day < stock.listed or (stock.delisted and day >= stock.delisted) or day in stock.suspended:
                continue
            pre = round(prev - DIVIDEND, 2) if (stock.code == "600000" and day == EX_DATE) else prev
            close = round(pre * (1 + MOVES[i % len(MOVES)] * (4 if day == stock.listed and stock.listed > self.days[0] else 1)), 2)
            open_ = round(pre * 1.001, 2)
            high, low = round(max(open_, close) * 1.008, 2), round(min(open_, close) * 0.992, 2)
            lots = 1000 + (int(stock.code) * 7 + i * 131) % 9000
            volume = lots * 100
            amount = round(volume * (open_ + close) / 2, 2)
            bars.append(Bar(day, open_, high, low, close, pre, prev, volume, amount,
                            round(volume / stock.float_shares * 100, 4), round((close - pre) / pre * 100, 2)))
            prev = close
        return bars

    def stock(self, code: str) -> Stock:
        return next(stock for stock in self.stocks if stock.code == code)

    def bar(self, code: str, day: dt.date) -> Bar | None:
        return next((bar for bar in self.bars.get(code, []) if bar.day == day), None)

    def listed_on(self, day: dt.date, exchanges: tuple[str, ...] = ("sh", "sz", "bj")) -> list[Stock]:
        return [s for s in self.stocks if s.exchange in exchanges and s.listed <= day
                and (s.delisted is None or day < s.delisted)]

    def factor(self, code: str, day: dt.date) -> float:
        """The hfq factor, base 1.0 at listing: steps at 600000's ex-date."""
        if code != "600000" or day < EX_DATE:
            return 1.0
        bar = self.bar(code, EX_DATE)
        assert bar is not None
        return round(bar.raw_prev / bar.pre_close, 6)


# --- Eastmoney (stock_zh_a_hist, stock_zh_a_spot_em) ------------------------------------------
def eastmoney_kline(market: Market, code: str, beg: str, end: str) -> dict[str, Any]:
    """push2his kline: 日期,开盘,收盘,最高,最低,成交量(lots),成交额,振幅,涨跌幅,涨跌额,换手率 (change vs the raw close)."""
    first, last = dt.datetime.strptime(beg, "%Y%m%d").date(), dt.datetime.strptime(end, "%Y%m%d").date()
    lines = []
    for bar in market.bars.get(code, []):
        if first <= bar.day <= last:
            change = round(bar.close - bar.raw_prev, 2)
            lines.append(f"{bar.day},{bar.open:.2f},{bar.close:.2f},{bar.high:.2f},{bar.low:.2f},{bar.volume // 100},"
                         f"{bar.amount:.2f},{(bar.high - bar.low) / bar.raw_prev * 100:.2f},"
                         f"{change / bar.raw_prev * 100:.2f},{change:.2f},{bar.turnover:.2f}")
    if not lines:
        return {"rc": 0, "data": None}
    return {"rc": 0, "data": {"code": code, "market": 1 if code.startswith("6") else 0, "klines": lines}}


def eastmoney_clist(market: Market, day: dt.date, page: int, size: int) -> dict[str, Any]:
    """clist/get (stock_zh_a_spot_em): f-numbered fields; suspended stocks priced '-'."""
    diff = []
    for stock in market.listed_on(day):
        bar = market.bar(stock.code, day)
        price = (lambda v: "-") if bar is None else (lambda v: v)
        pre = market.bars[stock.code][-1].close if bar is None and market.bars[stock.code] else stock.base
        item: dict[str, Any] = {"f1": 2, "f2": price(bar and bar.close), "f3": price(bar and bar.pct),
                                "f4": price(bar and round(bar.close - bar.pre_close, 2)),
                                "f5": price(bar and bar.volume // 100), "f6": price(bar and bar.amount),
                                "f7": price(bar and 1.5), "f8": price(bar and round(bar.turnover, 2)), "f9": 10.0,
                                "f10": 1.0, "f11": 0.0, "f12": stock.code, "f13": 1 if stock.exchange == "sh" else 0,
                                "f14": stock.name, "f15": price(bar and bar.high), "f16": price(bar and bar.low),
                                "f17": price(bar and bar.open), "f18": bar.pre_close if bar else pre,
                                "f20": 1e10, "f21": 1e10, "f22": 0.0, "f23": 1.0, "f24": 0.0, "f25": 0.0}
        item.update({"f62": 0, "f115": 0, "f128": "-", "f140": "-", "f141": "-", "f136": "-", "f152": 2})
        diff.append(item)
    return {"rc": 0, "data": {"total": len(diff), "diff": diff[(page - 1) * size: page * size]}}


# --- Sina (hfq factors, the trading calendar) -------------------------------------------------
def sina_hfq_js(market: Market, symbol: str) -> str:
    code = symbol[2:]
    stock = market.stock(code)
    steps = [{"d": f"{stock.listed}", "f": "1.0000000000"}]
    if code == "600000":
        steps.append({"d": f"{EX_DATE}", "f": f"{market.factor(code, EX_DATE):.10f}"})
    payload = {"total": len(steps), "data": list(reversed(steps))}
    return f"var {symbol}hfq = {json.dumps(payload)}\n/* hfq factors */"


_ALPHABET = ("".join(chr(65 + i) for i in range(26)) + "".join(chr(97 + i) for i in range(26))
             + "".join(chr(48 + i) for i in range(10)) + "+/")
_EPOCH_OFFSET = 7657  # days from 1970-01-01 at which Sina's decoder counts day 0


def sina_calendar_js(days: list[dt.date]) -> str:
    """klc_td_sh.txt: `var datelist="...";` in Sina's bit-packed format 139 (what akshare's JS decoder reads).

    A little-endian bit stream of 6-bit characters: format id (12 bits), flags (6), first and
    last day index (18 each), then runs over the weekdays in between: the first run's length,
    and for every later run one skipped weekday and the length of the run after it.
    """
    bits: list[int] = []

    def put(value: int, width: int) -> None:
        bits.extend((value >> k) & 1 for k in range(width))

    index = [(day - dt.date(1970, 1, 1)).days - _EPOCH_OFFSET for day in sorted(days)]
    put(139, 12)
    put(63, 6)
    put(index[0], 18)
    put(index[-1], 18)
    wanted, runs, run, current = set(index), [], 0, index[0]
    while current <= index[-1]:
        if current in wanted:
            run += 1
        else:
            runs.append(run)
            run = 0
        current += 1
        while current % 7 in (3, 4):  # Saturday and Sunday in the decoder's count
            current += 1
    runs.append(run)
    width = max(1, max(runs).bit_length() + 2) // 3 + 1  # run lengths are 3*width bits wide
    for i, length in enumerate(runs):
        if i == 0:
            bits.extend([1, 1] + [1] * (width - 1) + [0])  # width += N(): sign +, then unary
        else:
            bits.append(0)
        put(length, 3 * width)
    bits.extend([0] * (-len(bits) % 6 + 12))
    text = "".join(_ALPHABET[sum(bit << k for k, bit in enumerate(bits[i:i + 6]))] for i in range(0, len(bits), 6))
    return f'var datelist="{text}";var KLC_TD_SH=datelist;'


# --- the exchanges' stock lists (akshare's stock_info_* functions) ------------------------------
def sse_list(market: Market, star: bool, delisted: bool = False) -> dict[str, Any]:
    result = []
    for s in market.stocks:
        if s.exchange != "sh" or (s.code.startswith("688") != star and not delisted):
            continue
        if delisted != (s.delisted is not None):
            continue
        if delisted:
            result.append({"COMPANY_CODE": s.code, "COMPANY_ABBR": s.name, "LIST_DATE": f"{s.listed:%Y%m%d}",
                           "DELIST_DATE": f"{s.delisted:%Y%m%d}"})
        else:
            result.append({"A_STOCK_CODE": s.code, "SEC_NAME_CN": s.name, "SEC_NAME_FULL": s.name,
                           "COMPANY_ABBR": s.name, "FULL_NAME": s.name, "LIST_DATE": f"{s.listed:%Y%m%d}"})
    return {"result": result, "pageHelp": {"total": len(result)}}


def szse_xlsx(market: Market, delisted: bool = False) -> bytes:
    """SZSE's ShowReport xlsx (the A-share list, or the delisted companies)."""
    import pandas as pd

    if delisted:
        rows = [{"证券代码": int(s.code), "证券简称": s.name, "上市日期": f"{s.listed}", "终止上市日期": f"{s.delisted}"}
                for s in market.stocks if s.exchange == "sz" and s.delisted]
        frame = pd.DataFrame(rows, columns=["证券代码", "证券简称", "上市日期", "终止上市日期"])
    else:
        rows = [{"板块": "主板" if s.code.startswith("0") else "创业板", "A股代码": int(s.code), "A股简称": s.name,
                 "A股上市日期": f"{s.listed}", "A股总股本": f"{s.float_shares:,}", "A股流通股本": f"{s.float_shares:,}",
                 "所属行业": "J 金融业"} for s in market.stocks if s.exchange == "sz" and not s.delisted]
        frame = pd.DataFrame(rows)
    buffer = io.BytesIO()
    frame.to_excel(buffer, index=False)
    return buffer.getvalue()


def bse_list(market: Market, page: int = 0, size: int = 20) -> str:
    """BSE's nqxxCnzq.do answer: JSONP around one page (20 a page) whose records akshare reads by position (48 fields)."""
    content = []
    for s in market.stocks:
        if s.exchange != "bj":
            continue
        record: dict[str, Any] = {f"k{i:02d}": "-" for i in range(48)}
        record.update({"k00": f"{s.listed:%Y%m%d}", "k11": s.float_shares, "k17": "软件", "k22": "20240101",
                       "k29": "上海", "k35": "券商", "k36": s.float_shares, "k38": s.code, "k40": s.name})
        content.append(record)
    pages = max(1, -(-len(content) // size))
    answer = {"content": content[page * size:(page + 1) * size], "totalPages": pages, "totalElements": len(content)}
    return "null(" + json.dumps([answer]) + ")"


# --- baostock's TCP protocol -----------------------------------------------------------------
BAOSTOCK_SPLIT = "\x01"
BAOSTOCK_END = "<![CDATA[]]>\n"
BAOSTOCK_DAILY_FIELDS = ("date,code,open,high,low,close,preclose,volume,amount,adjustflag,turn,tradestatus,pctChg,"
                         "peTTM,pbMRQ,psTTM,pcfNcfTTM,isST")


def baostock_message(msg_type: str, fields: list[str], compressed: bool = False) -> bytes:
    body = BAOSTOCK_SPLIT.join(fields)
    if compressed:
        packed = zlib.compress((body + "\n").encode())
        header = f"00.9.40{BAOSTOCK_SPLIT}{msg_type}{BAOSTOCK_SPLIT}{len(packed):010d}"
        return header.encode() + packed + BAOSTOCK_END.encode()
    text = body + BAOSTOCK_SPLIT + BAOSTOCK_END
    return (f"00.9.40{BAOSTOCK_SPLIT}{msg_type}{BAOSTOCK_SPLIT}{len(text):010d}" + text).encode()


def baostock_record(market: Market, stock: Stock, day: dt.date, suspended_rows: bool = True) -> list[str] | None:
    bar = market.bar(stock.code, day)
    code = f"{stock.exchange}.{stock.code}"
    if bar is None:
        if not suspended_rows or day < stock.listed or (stock.delisted and day >= stock.delisted):
            return None
        prev = [b for b in market.bars[stock.code] if b.day < day]
        close = f"{prev[-1].close:.4f}" if prev else f"{stock.base:.4f}"
        return [f"{day}", code, close, close, close, close, close, "0", "0.0000", "3", "", "0", "0.000000",
                "", "", "", "", "0"]
    return [f"{day}", code, f"{bar.open:.4f}", f"{bar.high:.4f}", f"{bar.low:.4f}", f"{bar.close:.4f}",
            f"{bar.pre_close:.4f}", f"{bar.volume}", f"{bar.amount:.4f}", "3", f"{bar.turnover:.6f}", "1",
            f"{bar.pct:.6f}", "4.9", "0.4", "1.0", "-2.1", "1" if stock.name.startswith("ST") else "0"]


# --- Tushare --------------------------------------------------------------------------------
def tushare_answer(fields: list[str], items: list[list[Any]]) -> dict[str, Any]:
    return {"request_id": "t", "code": 0, "msg": "", "data": {"fields": fields, "items": items, "has_more": False}}


def ts_code(stock: Stock) -> str:
    return f"{stock.code}.{stock.exchange.upper()}"


def tushare_daily(market: Market, day: dt.date) -> dict[str, Any]:
    fields = ["ts_code", "trade_date", "open", "high", "low", "close", "pre_close", "pct_chg", "vol", "amount"]
    items = [[ts_code(s), f"{day:%Y%m%d}", bar.open, bar.high, bar.low, bar.close, bar.pre_close, bar.pct,
              bar.volume / 100, round(bar.amount / 1000, 3)]
             for s in market.stocks if (bar := market.bar(s.code, day)) is not None]
    return tushare_answer(fields, items)
