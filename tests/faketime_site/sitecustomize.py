"""Loaded (through PYTHONPATH) only by the syncd processes tests/test_horizon.py runs under libfaketime.

Those run with FAKETIME_DONT_FAKE_MONOTONIC=1: Python's timed lock waits use sem_clockwait on
CLOCK_MONOTONIC, which libfaketime 0.9.10 does not intercept, so a faked monotonic clock (a
2027 value) makes every timed wait hang. With the monotonic clock left real, libfaketime's
clock_nanosleep wrapper answers Python's time.sleep (an absolute CLOCK_MONOTONIC sleep) with
EINVAL; so here sleep waits on an Event instead, which is the same wait by another call. The
wall clock (time.time, datetime.now) is the faked one, which is what the tests are about.
"""

import threading
import time


def _sleep(seconds: float) -> None:
    if seconds > 0:
        threading.Event().wait(seconds)


time.sleep = _sleep
