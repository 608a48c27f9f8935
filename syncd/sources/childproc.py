"""Running code in a child process: the one runner both kinds of syncd's children use.

Two roles run in children (docs/design.md, "Threads and processes"): the fetch process
(fetchproc.py: a source's by_day fetches, days streamed back ready to COPY) and the library
processes (isolation.py: one third-party library's calls, each under a deadline). What they
share is owned here, once:

- Starting: `python -m MODULE PARENT_PID ...` with the environment scrubbed of what reaches the
  database or a token (`child_environment`: no SYNCD_*, PG* or DATABASE_URL), stdin and stdout
  as its two pipes (1 MiB each where the kernel allows: a day's payload fits whole), stderr
  shared with the daemon, no other descriptor. The child keeps a private copy of stdout for its
  answers and points fd 1 elsewhere, so whatever a library prints never lands in the wire.
- The wire, both ways: a 4-byte big-endian length, then a msgpack array. The length's top bit
  says a raw payload frame follows (length, bytes), read straight into one buffer and handed
  over as the message's last element (a day's COPY payload is never copied into a message).
  msgpack, not pickle: a library child parses what remote servers send, and nothing it sends
  back can make the daemon build an object of its choosing.
- Dying with the daemon: the child ignores SIGINT (the parent decides when it ends), exits when
  its command pipe closes, and a watchdog thread ends it within 0.2 s of the parent process
  dying. A child whose starter thread lives as long as the daemon (the fetch process: started
  by the main thread, or by the worker's when it restarts one) also asks the kernel for
  SIGKILL when that thread ends (PR_SET_PDEATHSIG): immediate, and it holds even while the
  child's main thread keeps the GIL in C code. Library children do not:
  they are started by whichever thread calls first (a stock-ask thread that ends with its
  fetch) and must outlive it, as their library session is worth keeping.
- Ending: `close(goodbye)` asks politely and kills after a grace; `kill()` is immediate
  (a call past its deadline, a cancel). Either way the child is reaped and its pipes closed.

What travels is the role's own (fetchproc.py and isolation.py each document their messages).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

_LENGTH = struct.Struct(">I")
_PAYLOAD_FOLLOWS = 1 << 31
_PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031
_PR_SET_PDEATHSIG = 1
POLL_S = 0.05                  # how often a parent waiting for an answer looks at its give-up condition
WATCHDOG_INTERVAL_S = 0.2      # how often a child looks for its parent
_SECRET_ENV_PREFIXES = ("SYNCD_", "PG")
_SECRET_ENV = {"DATABASE_URL"}

Message = list[Any]


class ChildGone(Exception):
    """The child closed its end (it died, or broke the wire); the message says what the parent saw."""


def child_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment without what could reach the database or a token, plus syncd's path."""
    source = dict(os.environ if environ is None else environ)
    env = {key: value for key, value in source.items()
           if not key.startswith(_SECRET_ENV_PREFIXES) and key not in _SECRET_ENV}
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, source.get("PYTHONPATH", "")]))
    env["TQDM_DISABLE"] = "1"  # akshare draws progress bars on stderr: the daemon's log
    return env


class ChildProcess:
    """The parent's side of one child: `python -m module` started by `start`, spoken to by `send` and `receive`."""

    def __init__(self, module: str, *args: str) -> None:
        self.module = module
        self.args = args
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> int:
        """Start a new child (ending any earlier one); its pid."""
        self.kill()
        proc = subprocess.Popen([sys.executable, "-m", self.module, str(os.getpid()), *self.args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, bufsize=0, close_fds=True, env=child_environment())
        assert proc.stdin is not None and proc.stdout is not None
        for pipe in (proc.stdin, proc.stdout):
            try:
                fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
            except OSError:
                pass  # a smaller pipe still works: the writer waits for the reader sooner
        self._proc = proc
        return proc.pid

    def send(self, message: Message, payload: bytes | bytearray | None = None) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise ChildGone("it is not running")
        try:
            _write_message(proc.stdin.fileno(), message, payload)
        except OSError as exc:
            raise ChildGone(f"cannot send to it ({exc})") from None

    def receive(self, give_up: Callable[[], bool], timeout_s: float | None = None) -> Message | None:
        """The next message (a payload frame appended as its last element); None once `give_up()` turned true,
        or `timeout_s` passed, while none was coming. ChildGone if the child closed its end."""
        proc = self._proc
        if proc is None or proc.stdout is None:
            raise ChildGone("it is not running")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:  # (another thread may kill the child meanwhile: its closed pipe reads as gone)
            fd = proc.stdout.fileno()  # unbuffered: what select() sees is all there is
            while True:
                wait = POLL_S if deadline is None else min(POLL_S, max(0.0, deadline - time.monotonic()))
                if select.select([fd], [], [], wait)[0]:
                    break
                if give_up() or (deadline is not None and time.monotonic() >= deadline):
                    return None
            message = _read_message(fd)
        except (OSError, ValueError) as exc:  # msgspec.DecodeError is a ValueError: a broken wire
            raise ChildGone(f"cannot read from it ({exc})") from None
        if message is None:
            raise ChildGone("it closed its pipe")
        return message

    def close(self, goodbye: Message | None = None, grace_s: float = 1.0) -> int | None:
        """Send `goodbye` and give the child `grace_s` to exit, then kill it; its exit code (None if none ran)."""
        proc = self._proc
        if proc is None:
            return None
        try:
            if goodbye is not None and proc.poll() is None:
                self.send(goodbye)
            proc.wait(grace_s)
        except (ChildGone, subprocess.TimeoutExpired):
            pass
        return self.kill()

    def kill(self) -> int | None:
        """End the child now (SIGKILL unless it has exited), reap it and close its pipes; its exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        try:
            code: int | None = proc.wait(5.0)
        except subprocess.TimeoutExpired:
            code = None
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        return code


class ParentLink:
    """The child's side: its two pipes to the parent (`attach` sets it up, first thing in the child's main)."""

    def __init__(self, commands: int, answers: int) -> None:
        self.commands, self.answers = commands, answers

    @classmethod
    def attach(cls, argv: list[str], *, prints_to_stderr: bool, die_with_thread: bool) -> ParentLink:
        """argv[0] is the parent's pid (ChildProcess.start). Ignore SIGINT, die with the parent (see the
        module docstring), keep stdout for the answers and point fd 1 at stderr or /dev/null."""
        parent = int(argv[0])
        if die_with_thread:
            try:
                ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            except (OSError, AttributeError):
                pass  # not Linux: the watchdog and the closed command pipe still end us
        if os.getppid() != parent:  # gone before we could watch
            os._exit(0)
        threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the daemon's to handle; it closes us
        answers = os.dup(1)
        if prints_to_stderr:
            os.dup2(2, 1)
        else:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)
        return cls(sys.stdin.fileno(), answers)

    def read(self) -> Message | None:
        """The parent's next message; None when it closed the pipe."""
        return _read_message(self.commands)

    def pending(self) -> bool:
        """Whether a message from the parent is waiting (never blocks)."""
        return bool(select.select([self.commands], [], [], 0)[0])

    def send(self, message: Message, payload: bytes | bytearray | None = None) -> None:
        _write_message(self.answers, message, payload)


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(WATCHDOG_INTERVAL_S)
        if os.getppid() != parent:
            os._exit(0)


def _write_message(fd: int, message: Message, payload: bytes | bytearray | None) -> None:
    body = msgspec.msgpack.encode(message)
    head = len(body) | (_PAYLOAD_FOLLOWS if payload is not None else 0)
    frames: list[bytes | bytearray] = [_LENGTH.pack(head), body]
    if payload is not None:
        frames += [_LENGTH.pack(len(payload)), payload]
    views = [memoryview(frame) for frame in frames if len(frame)]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


def _read_message(fd: int) -> Message | None:
    head = _read_exactly(fd, _LENGTH.size)
    if head is None:
        return None
    (length,) = _LENGTH.unpack(head)
    body = _read_exactly(fd, length & ~_PAYLOAD_FOLLOWS)
    if body is None:
        return None
    message = msgspec.msgpack.decode(body)
    if not isinstance(message, list) or not message:
        raise OSError(f"not a message: {body[:40]!r}")
    if length & _PAYLOAD_FOLLOWS:
        size = _read_exactly(fd, _LENGTH.size)
        payload = None if size is None else _read_into(fd, bytearray(_LENGTH.unpack(size)[0]))
        if payload is None:
            return None
        message.append(payload)
    return message


def _read_into(fd: int, buffer: bytearray) -> bytearray | None:
    view, done = memoryview(buffer), 0
    while done < len(buffer):
        got = os.readv(fd, [view[done:]])
        if not got:
            return None
        done += got
    return buffer


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
