"""The worker's read-ahead: order kept, errors re-raised, and a consumer that stops early stops the producer."""

import threading

import pytest
from conftest import wait_until

from syncd.run.readahead import read_ahead


def test_read_ahead_yields_every_item_in_order():
    assert list(read_ahead(iter(range(100)))) == list(range(100))


def test_read_ahead_reraises_the_sources_error_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise ValueError("upstream broke")

    got = []
    with pytest.raises(ValueError, match="upstream broke"):
        for item in read_ahead(source()):
            got.append(item)
    assert got == [1, 2]


def test_read_ahead_runs_at_most_depth_items_ahead_and_stops_when_the_consumer_does():
    produced = []
    finished = threading.Event()

    def source():
        try:
            for i in range(1000):
                produced.append(i)
                yield i
        finally:
            finished.set()

    reader = read_ahead(source(), depth=1)
    assert next(reader) == 0
    wait_until(lambda: len(produced) >= 3, what="the producer to fill the read-ahead")
    assert len(produced) <= 3  # one handed over, one queued, one waiting to be queued
    reader.close()
    wait_until(lambda: threading.active_count() == 1 or not any(t.name == "syncd-read-ahead" for t in threading.enumerate()),
               what="the read-ahead thread to end")
    assert len(produced) < 1000
