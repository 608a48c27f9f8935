"""A real PgBouncer (Debian's package) in front of the test PostgreSQL, for the pooler tests.

`PgBouncer.start(server_dsn, folder, pool_mode=...)` writes a config that forwards every
database name to the server of `server_dsn` (a unix socket for pgserver, or a host), listens on
a free loopback port, authenticates clients by trust, and sets `ignore_startup_parameters =
extra_float_digits`, the setting psycopg and JDBC users run with (so a startup `options`
parameter is refused, as in production). Running as root, it drops to the owner of the server's
socket folder (pgbouncer refuses to run as root). `dsn(database_dsn)` is the same database
through the pooler.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import psycopg
from conftest import wait_until

PGBOUNCER = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PgBouncer:
    def __init__(self, folder: Path, port: int, proc: subprocess.Popen[bytes]) -> None:
        self.folder = folder
        self.port = port
        self.proc = proc

    @classmethod
    def start(cls, server_dsn: str, folder: Path, *, pool_mode: str = "transaction", pool_size: int = 2) -> PgBouncer:
        assert PGBOUNCER is not None
        server = psycopg.conninfo.conninfo_to_dict(server_dsn)
        host, user = str(server.get("host") or "/tmp"), str(server.get("user") or pwd.getpwuid(os.getuid()).pw_name)
        target = f"host={host} port={server.get('port') or 5432} user={user}"
        if server.get("password"):
            target += f" password={server['password']}"
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        (folder / "users.txt").write_text(f'"{user}" ""\n')
        port = free_port()
        (folder / "pgbouncer.ini").write_text(
            f"[databases]\n* = {target}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
            f"unix_socket_dir =\nauth_type = trust\nauth_file = {folder / 'users.txt'}\npool_mode = {pool_mode}\n"
            f"ignore_startup_parameters = extra_float_digits\ndefault_pool_size = {pool_size}\nmax_client_conn = 500\n"
            "server_check_delay = 0\n")
        for name in ("users.txt", "pgbouncer.ini"):
            (folder / name).chmod(0o644)
        command = [PGBOUNCER, str(folder / "pgbouncer.ini")]
        if os.geteuid() == 0:
            command[1:1] = ["-u", _unprivileged_user(host)]
        log = (folder / "pgbouncer.log").open("ab")
        bouncer = cls(folder, port, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        wait_until(bouncer._accepts, timeout=15, what="pgbouncer to accept connections")
        return bouncer

    def dsn(self, database_dsn: str) -> str:
        """`database_dsn`'s database and user, through this PgBouncer."""
        info = psycopg.conninfo.conninfo_to_dict(database_dsn)
        return psycopg.conninfo.make_conninfo(host="127.0.0.1", port=str(self.port), dbname=info.get("dbname", "postgres"),
                                              user=info.get("user") or pwd.getpwuid(os.getuid()).pw_name)

    def _accepts(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"pgbouncer exited with {self.proc.returncode}:\n{self.log_text()}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def log_text(self) -> str:
        path = self.folder / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # pgbouncer's immediate shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _unprivileged_user(host: str) -> str:
    """Who may reach the server's unix socket: the owner of its folder (pgserver's own user), else nobody."""
    if host.startswith("/") and os.path.isdir(host):
        owner = pwd.getpwuid(os.stat(host).st_uid).pw_name
        if owner != "root":
            return owner
    return "nobody"
