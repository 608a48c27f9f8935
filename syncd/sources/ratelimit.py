"""Pacing for sources backed by remote services: how fast, how often and how politely they ask.

Owns `RateLimiter` (at most N requests a second across all of a source's threads, with
random jitter so requests do not arrive on a fixed beat), `Upstream` (one remote service as
the source sees it: every request paced, retried with backoff; a ban-like answer is not retried: every thread
of the source pauses instead, longer after each ban in a row) and `Memo` (a value
fetched again once it is older than its age limit). It knows nothing about bars, libraries
or the database. Everything is an instance with an injectable clock, sleep and random
source, so tests never wait; there is no module-level mutable state.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from .base import SourceError
from .isolation import CallCancelled, UpstreamFailure

T = TypeVar("T")
Sleep = Callable[[float], None]
STOP_POLL_S = 0.1
NOT_RETRIED = {"rejected", "unavailable"}  # retrying cannot help: fail at once


class RateLimiter:
    """At most `per_second` acquisitions a second, shared by any number of threads.

    Each `acquire` reserves the next free slot under a lock and sleeps (outside the lock)
    until it; slots are `1 / per_second` apart plus up to `jitter` of that interval at random.
    """

    def __init__(self, per_second: float, *, jitter: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 sleep: Sleep = time.sleep, rng: random.Random | None = None) -> None:
        if not per_second > 0:
            raise ValueError(f"requests_per_second must be > 0, got {per_second!r}")
        self.interval = 1.0 / per_second
        self.jitter = jitter
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._next_free = -math.inf
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until the caller may send one request; return the slot's time on the clock."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_free)
            self._next_free = slot + self.interval * (1.0 + self.jitter * self._rng.random())
        if slot > now:
            self._sleep(slot - now)
        return slot


@dataclass(frozen=True)
class Politeness:
    """How one upstream is asked: pace, retries, and the pause after a ban-like answer."""

    requests_per_second: float
    jitter: float = 0.5
    attempts: int = 3                 # tries per request, the first included
    backoff_s: float = 1.0            # before the 2nd try; doubles each try
    ban_pause_s: float = 60.0         # the whole source pauses after a ban-like answer...
    ban_pause_max_s: float = 300.0    # ...doubling for each ban in a row, up to this
    rate_limit_pause_s: float = 61.0  # after a per-minute quota answer


class Upstream:
    """One remote service shared by a source's threads; `ask` runs one request politely."""

    def __init__(self, label: str, politeness: Politeness, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Sleep = time.sleep, rng: random.Random | None = None,
                 on_pause: Callable[[float, str], None] | None = None) -> None:
        self.label = label
        self._on_pause = on_pause
        self.politeness = politeness
        self.limiter = RateLimiter(politeness.requests_per_second, jitter=politeness.jitter, clock=clock,
                                   sleep=sleep, rng=rng)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._paused_until = -math.inf
        self._bans_in_a_row = 0
        self.bans = 0  # ban-like answers seen (for reports)
        self.calls = 0  # requests sent, every attempt counted (a reconciliation reports what it cost)

    def ask(self, call: Callable[[], T], what: str, should_stop: Callable[[], bool]) -> T:
        """`call()` with pacing and retries; SourceError naming `what` once the tries are spent.

        Raises CallCancelled as soon as `should_stop()` turns true while waiting, and the
        UpstreamFailure itself for failures retrying cannot help (kind rejected/unavailable).
        """
        last: UpstreamFailure | None = None
        for attempt in range(max(1, self.politeness.attempts)):
            if attempt:
                self._wait(self.politeness.backoff_s * 2 ** (attempt - 1), should_stop)
            self._wait(self._paused_until - self._clock(), should_stop)
            self.limiter.acquire()
            if should_stop():
                raise CallCancelled(f"{what}: cancelled")
            with self._lock:
                self.calls += 1
            try:
                value = call()
            except UpstreamFailure as exc:
                if exc.kind in NOT_RETRIED:
                    raise
                self._after_failure(exc)
                last = exc
                if exc.kind == "banned":
                    break  # a ban does not lift in seconds: the pause spares the next request, this one gives up
                continue
            with self._lock:
                self._bans_in_a_row = 0
            return value
        tries = "1 attempt (banned)" if last is not None and last.kind == "banned" else f"{max(1, self.politeness.attempts)} attempts"
        raise SourceError(f"{what} failed after {tries}: {last}")

    def _after_failure(self, exc: UpstreamFailure) -> None:
        pause = 0.0
        with self._lock:
            if exc.kind == "banned":
                self.bans += 1
                pause = min(self.politeness.ban_pause_max_s, self.politeness.ban_pause_s * 2 ** self._bans_in_a_row)
                self._bans_in_a_row += 1
            elif exc.kind == "rate_limited":
                pause = self.politeness.rate_limit_pause_s
            if pause:
                self._paused_until = max(self._paused_until, self._clock() + pause)
        if pause and self._on_pause is not None:
            self._on_pause(pause, str(exc))

    def _wait(self, seconds: float, should_stop: Callable[[], bool]) -> None:
        deadline = self._clock() + seconds
        while (left := deadline - self._clock()) > 0:
            if should_stop():
                raise CallCancelled(f"{self.label}: cancelled while pausing")
            self._sleep(min(left, STOP_POLL_S))
        if should_stop():
            raise CallCancelled(f"{self.label}: cancelled")


class Memo(Generic[T]):
    """One value, fetched on first use and again once older than `max_age_s` (or after `forget`).

    `get(fetch)` is thread-safe; concurrent callers on a stale memo fetch once. A failed
    fetch raises and leaves the previous value (if any) for the next attempt.
    """

    def __init__(self, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._value: T | None = None
        self._fetched_at = -math.inf

    def get(self, fetch: Callable[[], T]) -> T:
        with self._lock:
            if self._value is None or self._clock() - self._fetched_at > self.max_age_s:
                self._value = fetch()
                self._fetched_at = self._clock()
            return self._value

    def forget(self) -> None:
        with self._lock:
            self._value = None
