"""Pacing for sources backed by remote services: how fast and how often they ask upstream.

Owns three small, thread-safe instruments a remote source composes: `RateLimiter` (at most N
requests a second across all of the source's threads), `call_with_retries` (a few attempts
with backoff around one library call, then SourceError) and `DailyCache` (a value fetched at
most once per Asia/Shanghai day). It knows nothing about bars, libraries or the database.
Everything is an instance with an injectable clock and sleep, so tests never wait; there is
no module-level mutable state.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from .base import SourceError

T = TypeVar("T")


class RateLimiter:
    """At most `per_second` acquisitions a second, evenly spaced, shared by any number of threads.

    Each `acquire` reserves the next free slot under a lock and sleeps (outside the lock)
    until it; slots are `1 / per_second` apart, so bursts are smoothed rather than allowed.
    """

    def __init__(self, per_second: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not per_second > 0:
            raise ValueError(f"requests_per_second must be > 0, got {per_second!r}")
        self.interval = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._next_free = -math.inf
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until the caller may send one request; return the slot's time on the clock."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_free)
            self._next_free = slot + self.interval
        if slot > now:
            self._sleep(slot - now)
        return slot


def call_with_retries(call: Callable[[], T], *, what: str, attempts: int, backoff_s: float,
                      sleep: Callable[[float], None] = time.sleep) -> T:
    """Run `call` up to `attempts` times, sleeping backoff_s, 2*backoff_s, ... between tries.

    `call` wraps one third-party library call, which may raise anything (network errors,
    JSON errors, KeyError on a changed payload); after the last attempt the error becomes a
    SourceError whose message starts with `what` (e.g. "akshare stock_zh_a_hist(600000)").
    """
    last: Exception | None = None
    for attempt in range(max(1, attempts)):
        if attempt:
            sleep(backoff_s * 2 ** (attempt - 1))
        try:
            return call()
        except SourceError as exc:  # an upstream error reply, already described
            last = exc
        except Exception as exc:  # noqa: BLE001 - library boundary: any failure is a failed request
            last = exc
    raise SourceError(f"{what} failed after {max(1, attempts)} attempts: {_describe(last)}") from last


def _describe(exc: Exception | None) -> str:
    if exc is None:
        return "no attempt made"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class DailyCache(Generic[T]):
    """One value, fetched on first use and again only once `today()` has moved on.

    `get(fetch)` is thread-safe; concurrent callers on a stale cache fetch once. A failed
    fetch raises and leaves the previous value (if any) in place for the next attempt.
    """

    def __init__(self, today: Callable[[], dt.date]) -> None:
        self._today = today
        self._lock = threading.Lock()
        self._day: dt.date | None = None
        self._value: T | None = None

    def get(self, fetch: Callable[[], T]) -> T:
        with self._lock:
            today = self._today()
            if self._day != today or self._value is None:
                self._value = fetch()
                self._day = today
            return self._value

    def peek(self) -> T | None:
        """The cached value, however old, without fetching."""
        with self._lock:
            return self._value
