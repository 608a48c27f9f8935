"""Running as a service: sd_notify over a real datagram socket, socket permissions, tcp exposure refused."""

import os
import socket
import stat
import subprocess
import sys

from conftest import wait_until


class NotifyListener:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    def seen(self, prefix: str) -> list[str]:
        return [m for m in self.drain() for line in m.splitlines() if line.startswith(prefix)]


def test_sd_notify_ready_status_watchdog_and_stopping(syncd_factory, short_tmp):
    listener = NotifyListener(short_tmp / "notify.sock")
    daemon = syncd_factory({"source": {"demo": {"day_delay_s": 0.05}}},
                           env={"NOTIFY_SOCKET": str(short_tmp / "notify.sock"), "WATCHDOG_USEC": "200000"})
    assert wait_until(lambda: listener.seen("READY=1"), what="READY=1")
    wait_until(lambda: len(listener.seen("WATCHDOG=1")) >= 3, what="three watchdog pings while idle")
    run = daemon.client().start("2025-09-01", "2025-09-30")
    wait_until(lambda: any(run.run_id in m for m in listener.seen("STATUS=")), what="STATUS= naming the run")
    daemon.stop()
    assert listener.seen("STOPPING=1")
    ready_at = next(i for i, m in enumerate(listener.messages) if "READY=1" in m)
    assert ready_at < next(i for i, m in enumerate(listener.messages) if "WATCHDOG=1" in m)


def test_ipc_socket_file_carries_socket_mode(syncd_factory):
    daemon = syncd_factory({"daemon": {"socket_mode": "0600"}})
    path = daemon.endpoint[len("ipc://"):]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    other = syncd_factory(name="other")
    assert stat.S_IMODE(os.stat(other.endpoint[len("ipc://"):]).st_mode) == 0o660


def test_tcp_endpoint_off_loopback_without_curve_keys_is_refused(short_tmp):
    config = short_tmp / "config.toml"
    config.write_text('[daemon]\nendpoint = "tcp://0.0.0.0:45871"\nstate_dir = "st"\n')
    result = subprocess.run([sys.executable, "-m", "syncd", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert "daemon.endpoint" in result.stderr and "CURVE" in result.stderr


def test_a_start_that_must_build_an_index_per_year_asks_systemd_for_more_time_first(syncd_factory, short_tmp):
    """Migration 7 builds an index on each year's partition: seconds a year, past the unit's start timeout on a
    long history. The daemon extends the timeout (EXTEND_TIMEOUT_USEC) before migrating, once, not on later starts."""
    listener = NotifyListener(short_tmp / "notify.sock")
    env = {"NOTIFY_SOCKET": str(short_tmp / "notify.sock")}
    daemon = syncd_factory(env=env)  # a new database: every migration is pending
    wait_until(lambda: listener.seen("READY=1"), what="READY=1")
    extend = next(i for i, m in enumerate(listener.messages) if "EXTEND_TIMEOUT_USEC=" in m)
    assert extend < next(i for i, m in enumerate(listener.messages) if "READY=1" in m)
    daemon.stop()
    listener.messages.clear()
    daemon.start()
    wait_until(lambda: listener.seen("READY=1"), what="READY=1 again")
    assert not listener.seen("EXTEND_TIMEOUT_USEC=")
