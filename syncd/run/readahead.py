"""Read-ahead for the worker: iterate a source on a helper thread, one item ahead of the consumer.

Generating or downloading day N+1 then overlaps writing day N (the writer mostly waits on
PostgreSQL with the GIL released). The queue holds `depth` items, so memory stays bounded by
a few days of rows. An exception in the source is re-raised in the consumer; a consumer that
stops early (cancel, a failed write) closes the read-ahead, and the helper thread ends at its
next hand-over.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")
_END = object()


def read_ahead(items: Iterable[T], depth: int = 1) -> Generator[T, None, None]:
    """Yield `items` in order while a helper thread produces up to `depth` of them ahead."""
    handoff: queue.Queue[tuple[object, object]] = queue.Queue(maxsize=depth)
    closed = threading.Event()

    def put(kind: object, value: object) -> bool:
        while not closed.is_set():
            try:
                handoff.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put("item", item):
                    return
            put(_END, None)
        except BaseException as exc:  # handed to the consumer, which raises it
            put("error", exc)

    thread = threading.Thread(target=produce, name="syncd-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind is _END:
                return
            if kind == "error":
                raise value  # type: ignore[misc]
            yield value  # type: ignore[misc]
    finally:
        closed.set()
