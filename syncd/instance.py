"""Single-instance guards: flock'd lock files held for the daemon's life.

Binding an ipc:// endpoint a second time silently steals it from the running daemon, so a
second syncd on the same state_dir (`state_dir/syncd.lock`), or on the same ipc socket path
from another state_dir (`<socket>.lock`, next to the socket), must refuse before it binds
anything. flock is released by the kernel when the holder dies (even by SIGKILL), so a
stale file never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class AlreadyRunning(Exception):
    """Another syncd holds the lock; the message says which pid."""


class InstanceLock:
    """Holds a lock file exclusively; the file records the holder's pid.

    `refusal` is the message when another process holds it, with `{pid}` for the holder's pid.
    """

    def __init__(self, path: str | os.PathLike[str], refusal: str) -> None:
        self.path = Path(path)
        self.refusal = refusal
        self._fd: int | None = None

    @classmethod
    def for_state_dir(cls, state_dir: str | os.PathLike[str]) -> InstanceLock:
        return cls(Path(state_dir) / "syncd.lock", f"syncd is already running (pid {{pid}}) on state_dir {state_dir}")

    @classmethod
    def for_socket(cls, socket_path: Path) -> InstanceLock:
        return cls(socket_path.with_name(socket_path.name + ".lock"),
                   f"daemon.endpoint: another syncd (pid {{pid}}) is listening on {socket_path}; syncd will not take it over")

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(self.refusal.format(pid=holder)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> InstanceLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
