"""syncd.systemd speaks sd_notify to a real unix datagram socket, and is silent without one."""

from __future__ import annotations

import os
import select
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.systemd import Notifier


class Receiver:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock, self.address = sock, address
        sock.settimeout(5.0)  # a deadline: a datagram that does not come fails the test

    def receive(self) -> list[str]:
        return self.sock.recv(4096).decode().split("\n")

    def nothing_pending(self) -> bool:
        readable, _, _ = select.select([self.sock], [], [], 0)
        return not readable


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    folder = tempfile.mkdtemp(dir="/tmp")  # sun_path is ~107 bytes: keep it short
    path = os.path.join(folder, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        yield Receiver(sock, path)
    finally:
        sock.close()
        shutil.rmtree(folder)


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"syncd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        yield Receiver(sock, "@" + name)
    finally:
        sock.close()


def test_ready_sends_ready_1_to_the_notify_socket(receiver: Receiver) -> None:
    with Notifier.from_env({"NOTIFY_SOCKET": receiver.address}) as notifier:
        assert notifier.ready() is True
        assert receiver.receive() == ["READY=1"]


def test_ready_can_carry_a_status_in_the_same_datagram(receiver: Receiver) -> None:
    with Notifier.from_env({"NOTIFY_SOCKET": receiver.address}) as notifier:
        notifier.ready(status="idle")
        assert receiver.receive() == ["READY=1", "STATUS=idle"]


def test_status_stopping_and_watchdog_send_their_assignments(receiver: Receiver) -> None:
    with Notifier.from_env({"NOTIFY_SOCKET": receiver.address}) as notifier:
        assert notifier.status("syncing 2024-01-02 (3/20)")
        assert receiver.receive() == ["STATUS=syncing 2024-01-02 (3/20)"]
        assert notifier.watchdog()
        assert receiver.receive() == ["WATCHDOG=1"]
        assert notifier.stopping()
        assert receiver.receive() == ["STOPPING=1"]


def test_status_text_cannot_inject_another_assignment(receiver: Receiver) -> None:
    with Notifier.from_env({"NOTIFY_SOCKET": receiver.address}) as notifier:
        notifier.status("line one\nREADY=1")
        assert receiver.receive() == ["STATUS=line one READY=1"]


def test_abstract_socket_address_with_at_sign_is_reached(abstract_receiver: Receiver) -> None:
    with Notifier.from_env({"NOTIFY_SOCKET": abstract_receiver.address}) as notifier:
        assert notifier.ready() is True
        assert abstract_receiver.receive() == ["READY=1"]


def test_one_socket_serves_many_sends(receiver: Receiver) -> None:
    with Notifier.from_env({"NOTIFY_SOCKET": receiver.address}) as notifier:
        for n in range(5):
            assert notifier.status(f"n={n}")
        assert [receiver.receive() for _ in range(5)] == [[f"STATUS=n={n}"] for n in range(5)]


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    notifier = Notifier.from_env({})
    assert notifier.enabled is False
    assert notifier.ready() is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    notifier.close()


def test_from_env_defaults_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = Notifier.from_env()
    assert notifier.enabled is False
    assert notifier.watchdog_interval_s == 2.0


def test_a_vanished_receiver_returns_false_instead_of_raising(receiver: Receiver) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": receiver.address})
    receiver.sock.close()
    Path(receiver.address).unlink()
    assert notifier.ready() is False
    notifier.close()


def test_a_missing_socket_path_returns_false() -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/nonexistent/syncd-notify"})
    assert notifier.enabled is True
    assert notifier.ready() is False


def test_sending_after_close_returns_false(receiver: Receiver) -> None:
    notifier = Notifier.from_env({"NOTIFY_SOCKET": receiver.address})
    notifier.close()
    assert notifier.ready() is False
    assert receiver.nothing_pending()


def test_unsupported_address_kind_is_a_no_op() -> None:
    assert Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled is False


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    env = {"WATCHDOG_USEC": "30000000"}
    assert Notifier.from_env(env).watchdog_interval_s == 15.0
    assert Notifier.from_env({"WATCHDOG_USEC": "500000"}).watchdog_interval_s == 0.25


def test_watchdog_interval_applies_when_watchdog_pid_is_this_process() -> None:
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_env(env).watchdog_interval_s == 15.0


def test_watchdog_pid_of_another_process_means_no_watchdog() -> None:
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_env(env).watchdog_interval_s is None
    assert Notifier.from_env(env, pid=os.getpid() + 1).watchdog_interval_s == 15.0


@pytest.mark.parametrize("env", [{}, {"WATCHDOG_USEC": ""}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "soon"},
                                 {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"}])
def test_no_watchdog_interval_without_a_valid_watchdog_usec(env: dict[str, str]) -> None:
    assert Notifier.from_env(env).watchdog_interval_s is None
