"""LibraryProcess: every library call in a child process, killed at its deadline, gone with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until
from upstreams import HttpUpstream, Reply

from syncd.sources.childproc import child_environment
from syncd.sources.isolation import CallCancelled, LibraryProcess, UpstreamFailure, UpstreamTimeout

ANSWER = {"code": 0, "msg": "", "data": {"fields": ["a"], "items": [[1]]}}


@pytest.fixture
def upstream() -> Iterator[HttpUpstream]:
    server = HttpUpstream(lambda request: Reply(ANSWER))
    yield server
    server.stop()


@pytest.fixture
def process(upstream: HttpUpstream) -> Iterator[LibraryProcess]:
    child = LibraryProcess("syncd.sources.tushare_calls", {"url": upstream.url, "request_timeout_s": 60}, label="test")
    yield child
    child.close()


def ask(process: LibraryProcess, deadline_s: float = 10.0, **kwargs: object) -> object:
    return process.call("query", "daily", "token", {}, "", deadline_s=deadline_s, what="query", **kwargs)  # type: ignore[arg-type]


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_a_call_past_its_deadline_is_killed_and_the_next_call_starts_a_new_process(process: LibraryProcess,
                                                                                   upstream: HttpUpstream) -> None:
    assert ask(process) == [["a"], [[1]]]
    first = process.pid
    upstream.misbehave("stall", times=1)  # inside requests' read, with a 60 s timeout of its own
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match="no answer within 0.5 s"):
        ask(process, deadline_s=0.5)
    assert time.monotonic() - started < 5
    assert first is not None and gone(first)
    assert ask(process) == [["a"], [[1]]] and process.starts == 2


def test_a_cancel_kills_the_waiting_call_promptly(process: LibraryProcess, upstream: HttpUpstream) -> None:
    ask(process)
    upstream.misbehave("stall")
    cancel_at = time.monotonic() + 0.3
    started = time.monotonic()
    with pytest.raises(CallCancelled):
        ask(process, deadline_s=60.0, should_stop=lambda: time.monotonic() > cancel_at)
    assert time.monotonic() - started < 3


def test_a_child_that_dies_mid_call_is_a_failure_not_a_hang(process: LibraryProcess, upstream: HttpUpstream) -> None:
    ask(process)
    upstream.misbehave("stall")
    pid = process.pid
    assert pid is not None
    import threading

    threading.Timer(0.3, os.kill, (pid, signal.SIGKILL)).start()
    with pytest.raises(UpstreamFailure, match="library process ended"):
        ask(process, deadline_s=30.0)


def test_the_child_dies_with_its_parent(upstream: HttpUpstream, tmp_path: Path) -> None:
    """A parent killed with SIGKILL (no cleanup at all) leaves no library process behind."""
    upstream.misbehave("stall")
    script = textwrap.dedent(f"""
        import sys, threading
        from syncd.sources.isolation import LibraryProcess
        process = LibraryProcess("syncd.sources.tushare_calls", {{"url": "{upstream.url}", "request_timeout_s": 600}}, label="t")
        threading.Thread(target=lambda: process.call("query", "x", "t", {{}}, "", deadline_s=600, what="x"), daemon=True).start()
        import time
        deadline = time.monotonic() + 30
        while process.pid is None and time.monotonic() < deadline:  # the call's thread starts the child
            time.sleep(0.01)
        print(process.pid, flush=True)  # None (the parent's readline fails the test) if it never started
        time.sleep(600)  # stay alive, holding the child, until the test kills this process
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env=child_environment())
    try:
        child = int(parent.stdout.readline())  # type: ignore[union-attr]
        wait_until(lambda: upstream.count() >= 1, what="the child's request to stall")
        parent.kill()
        parent.wait()
        wait_until(lambda: gone(child), timeout=5, what="the orphaned library process to exit")
    finally:
        parent.kill()


def test_the_child_never_sees_the_database_or_the_token(process: LibraryProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_DSN", "postgresql://u:secret@db/x")
    monkeypatch.setenv("PGPASSWORD", "secret")
    monkeypatch.setenv("SYNCD_TUSHARE_TOKEN", "tok")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    ask(process)
    environ = dict(line.split("=", 1) for line in
                   Path(f"/proc/{process.pid}/environ").read_text().split("\0") if "=" in line)
    assert not {"SYNCD_DSN", "PGPASSWORD", "SYNCD_TUSHARE_TOKEN"} & set(environ)
    assert environ["HTTPS_PROXY"] == "http://proxy:3128"  # what the library needs to reach its service stays
    assert "psycopg" not in Path(f"/proc/{process.pid}/maps").read_text()
