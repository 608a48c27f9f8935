"""Labs for infrastructure faults on one machine: private PostgreSQL servers and a network of namespaces.

- `PgServer`: a PostgreSQL of a test's own (Debian's server binaries, else pgserver's), run as a
  non-root user, optionally inside a network namespace and with its data or WAL directory on a
  small tmpfs; the test reaches it over its unix socket (`dsn`), daemons over TCP.
- `NetLab`: PostgreSQL in a network namespace of its own, and one namespace per daemon joined to
  it by its own veth link (10.200.N.1 on PostgreSQL's side, 10.200.N.2 on the daemon's). `cut`
  takes a link down on PostgreSQL's side, so the daemon's packets vanish silently, as in a real
  partition; `heal` brings it back. Traffic stays on those addresses: the namespaces have
  nothing else.
- `NamespacedSyncd`: a real `python -m syncd` in a daemon's namespace with its own hostname (a
  UTS namespace), so sync_runs.host and the lock session's name are that host's. Its ipc://
  control socket is a file, reachable from the test's own namespace.

Everything needs root (namespaces, veth pairs, tmpfs mounts) and `ip`/`unshare`:
`unavailable_reason()` says why a lab cannot be built here, for a loud skip. Namespaces are
named `syncd-lab-<pid>-...`; `NetLab.close` deletes them, and a new lab first deletes those left
by test processes that no longer exist.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from conftest import SyncdProcess

NETNS_PREFIX = "syncd-lab-"
SERVER_USERS = ("postgres", "pgserver")  # a non-root user to run PostgreSQL (it refuses root)


def server_binaries() -> Path | None:
    """PostgreSQL's server binaries: Debian's postgresql-15, else the ones pgserver ships."""
    debian = Path("/usr/lib/postgresql/15/bin")
    if (debian / "postgres").exists():
        return debian
    try:
        import pgserver
    except ImportError:
        return None
    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin"
    return bundled if (bundled / "postgres").exists() else None


def server_user() -> str | None:
    for name in SERVER_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return None


def unavailable_reason(network: bool = True) -> str | None:
    """Why a lab cannot be built on this machine (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth pairs, tmpfs mounts)"
    if server_binaries() is None:
        return "no PostgreSQL server binaries (apt-get install postgresql-15, or pip install pgserver)"
    if server_user() is None:
        return f"no non-root user to run PostgreSQL as (one of {', '.join(SERVER_USERS)})"
    tools = ("runuser", "mount", *(("ip", "unshare") if network else ()))
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (iproute2, util-linux)"
    probe = f"{NETNS_PREFIX}{os.getpid()}-probe"
    if network:
        made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
        if made.returncode != 0:
            return f"network namespaces are not permitted here: ip netns add: {made.stderr.strip()}"
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done


# --- a private PostgreSQL -------------------------------------------------------------------------

class PgServer:
    """A PostgreSQL of a test's own; its socket and log in `folder`. `netns`: run it inside that network
    namespace (listening on all of its addresses); `pgdata`, `waldir`: keep the data directory, the WAL
    there (default: in `folder`). The test's DSN is its socket."""

    def __init__(self, folder: Path, *, netns: str | None = None, pgdata: Path | None = None, waldir: Path | None = None,
                 initdb_args: tuple[str, ...] = (), settings: dict[str, str] | None = None) -> None:
        self.folder = folder
        self.pgdata = pgdata or folder / "data"
        self.netns = netns
        self.bin = server_binaries()
        self.user = server_user()
        assert self.bin is not None and self.user is not None, unavailable_reason(network=False)
        self.settings = {"fsync": "off", "listen_addresses": "*" if netns else "", "unix_socket_directories": str(folder),
                         "max_connections": "60", **(settings or {})}
        self._chown(folder)
        self._chown(self.pgdata.parent)
        init = [str(self.bin / "initdb"), "-D", str(self.pgdata), "-A", "trust", "-U", "postgres", "--no-sync", *initdb_args]
        if waldir is not None:
            self._chown(waldir)
            init += ["--waldir", str(waldir / "wal")]
        self._as_user(*init)
        with (self.pgdata / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 10.200.0.0/16 trust\n")
        self.dsn = f"host={folder} port=5432 user=postgres dbname=postgres"

    def _chown(self, path: Path) -> None:
        info = pwd.getpwnam(self.user)
        os.chown(path, info.pw_uid, info.pw_gid)

    def _as_user(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return run(*prefix, "runuser", "-u", str(self.user), "--", *args, check=check)

    def start(self) -> None:
        options = " ".join(f"-c {key}='{value}'" for key, value in self.settings.items())
        self._as_user(str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-o", options, "-l", str(self.folder / "log"),
                      "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_user(str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop", check=False)

    def running(self) -> bool:
        return self._as_user(str(self.bin / "pg_ctl"), "-D", str(self.pgdata), "status", check=False).returncode == 0

    def log_text(self) -> str:
        path = self.folder / "log"
        return path.read_text(errors="replace") if path.exists() else ""

    def create_database(self) -> str:
        """A fresh database; its name."""
        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def local_dsn(self, dbname: str) -> str:
        return psycopg.conninfo.make_conninfo(self.dsn, dbname=dbname)


class Tmpfs:
    """A tmpfs of `size_mb` mounted on a new folder; `resize` grows or shrinks it in place."""

    PREFIX = "sdfs-"

    def __init__(self, size_mb: int) -> None:
        self._remove_stale()
        self.path = Path(tempfile.mkdtemp(prefix=f"{self.PREFIX}{os.getpid()}-", dir="/tmp"))
        run("mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(self.path))

    @classmethod
    def _remove_stale(cls) -> None:
        """Unmount the tmpfs left by test processes that no longer exist (a run killed before its clean-up)."""
        for line in Path("/proc/mounts").read_text().splitlines():
            mounted = line.split()[1]
            match = re.match(rf"^/tmp/{cls.PREFIX}(\d+)-", mounted)
            if match and not Path(f"/proc/{match.group(1)}").exists():
                run("umount", "-l", mounted, check=False)
                shutil.rmtree(mounted, ignore_errors=True)

    def resize(self, size_mb: int) -> None:
        run("mount", "-o", f"remount,size={size_mb}m", str(self.path))

    def resize_to_used_plus(self, free_kb: int) -> None:
        """Shrink it to what is used now plus `free_kb` (what the disk has left before it is full)."""
        stat = os.statvfs(self.path)
        used_kb = (stat.f_blocks - stat.f_bfree) * stat.f_frsize // 1024
        run("mount", "-o", f"remount,size={used_kb + free_kb}k", str(self.path))

    def close(self) -> None:
        run("umount", "-l", str(self.path), check=False)
        shutil.rmtree(self.path, ignore_errors=True)


# --- the network ----------------------------------------------------------------------------------

def remove_stale_namespaces() -> None:
    """Delete lab namespaces whose test process is gone (a run killed before its clean-up)."""
    listed = run("ip", "netns", "list", check=False).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.match(rf"^{re.escape(NETNS_PREFIX)}(\d+)-", name)
        if match and not Path(f"/proc/{match.group(1)}").exists():
            run("ip", "netns", "del", name, check=False)


class NetLab:
    """PostgreSQL in a namespace of its own; each daemon `name` in its own, over its own veth link."""

    def __init__(self, daemons: tuple[str, ...]) -> None:
        remove_stale_namespaces()
        self.prefix = f"{NETNS_PREFIX}{os.getpid()}-{secrets.token_hex(2)}"
        self.folder = Path(tempfile.mkdtemp(prefix="sdlab-", dir="/tmp"))
        self.namespaces: list[str] = []
        self.links: dict[str, int] = {}
        self.pg: PgServer | None = None
        try:
            self.pg_netns = self._namespace("pg")
            for index, name in enumerate(daemons, start=1):
                self._link(name, index)
            self.pg = PgServer(self.folder, netns=self.pg_netns, settings={"track_commit_timestamp": "on"})
            self.pg.start()
        except BaseException:
            self.close()
            raise

    def _namespace(self, name: str) -> str:
        netns = f"{self.prefix}-{name}"
        run("ip", "netns", "add", netns)
        self.namespaces.append(netns)
        run("ip", "-n", netns, "link", "set", "lo", "up")
        return netns

    def _link(self, name: str, index: int) -> None:
        netns = self._namespace(name)
        pg_end = self.pg_end(name)
        run("ip", "link", "add", "eth0", "netns", netns, "type", "veth", "peer", "name", pg_end, "netns", self.pg_netns)
        run("ip", "-n", self.pg_netns, "addr", "add", f"10.200.{index}.1/30", "dev", pg_end)
        run("ip", "-n", netns, "addr", "add", f"10.200.{index}.2/30", "dev", "eth0")
        run("ip", "-n", self.pg_netns, "link", "set", pg_end, "up")
        run("ip", "-n", netns, "link", "set", "eth0", "up")
        self.links[name] = index

    @staticmethod
    def pg_end(name: str) -> str:
        return f"to-{name}"

    def netns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def daemon_dsn(self, name: str, dbname: str) -> str:
        """How daemon `name` reaches PostgreSQL: over its own link, to PostgreSQL's address on it."""
        return f"host=10.200.{self.links[name]}.1 port=5432 user=postgres dbname={dbname}"

    def cut(self, name: str) -> float:
        """Cut daemon `name`'s link (PostgreSQL's end down: its packets are dropped silently); when (monotonic)."""
        run("ip", "-n", self.pg_netns, "link", "set", self.pg_end(name), "down")
        return time.monotonic()

    def heal(self, name: str) -> None:
        run("ip", "-n", self.pg_netns, "link", "set", self.pg_end(name), "up")

    def close(self) -> None:
        if self.pg is not None:
            self.pg.stop("immediate")
        for netns in reversed(self.namespaces):  # deleting a namespace deletes its end of each veth pair, and so the pair
            run("ip", "netns", "del", netns, check=False)
        self.namespaces.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


class NamespacedSyncd(SyncdProcess):
    """`python -m syncd` inside network namespace `netns`, with hostname `hostname` (its own UTS namespace)."""

    def __init__(self, folder: Path, config: dict[str, Any], netns: str, hostname: str) -> None:
        super().__init__(folder, config)
        self.netns = netns
        self.hostname = hostname

    def spawn(self) -> subprocess.Popen[bytes]:
        log = self.log_path.open("ab")
        # ip netns exec, unshare and sh each exec the next: the pid is the daemon's own
        command = ["ip", "netns", "exec", self.netns, "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"',
                   self.hostname, sys.executable, "-m", "syncd", "--config", str(self.config_path)]
        self.proc = subprocess.Popen(command, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        return self.proc
