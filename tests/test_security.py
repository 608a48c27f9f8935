"""syncd.security: the control socket is never reachable from the network without CURVE."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from syncd.config import ConfigError, parse_config
from syncd.control.curve import (
    apply_client_curve,
    apply_server_curve,
    check_endpoint,
    generate_keypair,
    is_loopback_endpoint,
    key_problem,
)
from syncd.security import main

PUBLIC, SECRET = generate_keypair()
REPLY_DEADLINE_S = 5.0   # a reply that should come gets this long
SILENCE_S = 0.3          # a reply that must not come is waited for this long


@pytest.mark.parametrize("endpoint", [
    "tcp://127.0.0.1:5555", "tcp://127.1.2.3:5555", "tcp://localhost:5555", "tcp://[::1]:5555",
    "tcp://[::ffff:127.0.0.1]:5555", "tcp://127.0.0.1:*",
])
def test_loopback_tcp_is_allowed_without_keys(endpoint: str) -> None:
    assert is_loopback_endpoint(endpoint)
    check_endpoint(endpoint, "", "")


def test_ipc_is_allowed_without_keys() -> None:
    check_endpoint("ipc:///run/syncd/syncd.sock", "", "")


@pytest.mark.parametrize("endpoint", [
    "tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://192.168.1.20:5555", "tcp://[::]:5555",
    "tcp://eth0:5555", "tcp://syncd.example.com:5555",
])
def test_tcp_beyond_loopback_is_refused_without_keys(endpoint: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check_endpoint(endpoint, "", "")
    message = str(refused.value)
    assert "daemon.endpoint" in message
    assert "curve_public_key" in message and "curve_secret_key" in message
    assert "docs/operations.md" in message and "Remote access with CURVE" in message


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:5555", "tcp://192.168.1.20:5555", "tcp://*:5555"])
def test_tcp_beyond_loopback_is_allowed_with_keys(endpoint: str) -> None:
    check_endpoint(endpoint, PUBLIC, SECRET)


def test_only_one_key_is_refused_naming_the_missing_one() -> None:
    with pytest.raises(ConfigError, match="daemon.curve_secret_key: missing"):
        check_endpoint("tcp://0.0.0.0:5555", PUBLIC, "")
    with pytest.raises(ConfigError, match="daemon.curve_public_key: missing"):
        check_endpoint("ipc:///run/syncd/syncd.sock", "", SECRET)


@pytest.mark.parametrize("bad", ["short", PUBLIC + "x", PUBLIC[:-1] + "~", "#" * 40])
def test_malformed_keys_are_refused(bad: str) -> None:
    assert key_problem(bad) is not None
    with pytest.raises(ConfigError, match="daemon.curve_public_key"):
        check_endpoint("tcp://0.0.0.0:5555", bad, SECRET)
    with pytest.raises(ConfigError, match="daemon.curve_secret_key"):
        check_endpoint("tcp://0.0.0.0:5555", PUBLIC, bad)


def test_a_public_key_of_another_pair_is_refused() -> None:
    other_public, _ = generate_keypair()
    with pytest.raises(ConfigError, match="does not belong"):
        check_endpoint("tcp://0.0.0.0:5555", other_public, SECRET)


def test_keygen_prints_daemon_lines_that_parse_and_pass_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen"]) == 0
    lines = capsys.readouterr().out
    daemon = parse_config(b'[daemon]\nendpoint = "tcp://0.0.0.0:5555"\n' + lines.encode()).daemon
    assert key_problem(daemon.curve_public_key) is None
    check_endpoint(daemon.endpoint, daemon.curve_public_key, daemon.curve_secret_key)


def test_client_refuses_a_malformed_server_key() -> None:
    with zmq.Context() as context, context.socket(zmq.REQ) as client:
        with pytest.raises(ValueError, match="server public key"):
            apply_client_curve(client, "not-a-key")


# A real REQ/REP round trip over tcp://127.0.0.1 with CURVE.

@pytest.fixture
def context() -> Iterator[zmq.Context]:  # type: ignore[type-arg]
    context: zmq.Context = zmq.Context()  # type: ignore[type-arg]
    yield context
    context.destroy(linger=0)


@pytest.fixture
def server(context: zmq.Context) -> tuple[zmq.Socket, str]:  # type: ignore[type-arg]
    socket = context.socket(zmq.REP)
    socket.linger = 0
    apply_server_curve(socket, PUBLIC, SECRET)
    socket.bind("tcp://127.0.0.1:*")
    return socket, socket.last_endpoint.decode()


def _client(context: zmq.Context, endpoint: str, **curve: str) -> zmq.Socket:  # type: ignore[type-arg]
    socket = context.socket(zmq.REQ)
    socket.linger = 0
    if curve:
        apply_client_curve(socket, **curve)
    socket.connect(endpoint)
    return socket


def _receive(socket: zmq.Socket, timeout_s: float) -> bytes | None:  # type: ignore[type-arg]
    """The next message, or None if none arrives by the deadline."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if socket.poll(int(left * 1000) + 1, zmq.POLLIN):
            return socket.recv(zmq.NOBLOCK)
    return None


def test_curve_client_with_the_server_key_gets_a_reply(context: zmq.Context, server: tuple[zmq.Socket, str]) -> None:  # type: ignore[type-arg]
    rep, endpoint = server
    req = _client(context, endpoint, server_public_key=PUBLIC)
    req.send(b'{"op":"ping"}')
    assert _receive(rep, REPLY_DEADLINE_S) == b'{"op":"ping"}'
    rep.send(b'{"status":"ok"}')
    assert _receive(req, REPLY_DEADLINE_S) == b'{"status":"ok"}'


def test_curve_client_with_its_own_keypair_gets_a_reply(context: zmq.Context, server: tuple[zmq.Socket, str]) -> None:  # type: ignore[type-arg]
    rep, endpoint = server
    client_public, client_secret = generate_keypair()
    req = _client(context, endpoint, server_public_key=PUBLIC, client_public_key=client_public, client_secret_key=client_secret)
    req.send(b"ping")
    assert _receive(rep, REPLY_DEADLINE_S) == b"ping"
    rep.send(b"pong")
    assert _receive(req, REPLY_DEADLINE_S) == b"pong"


def test_plain_client_without_keys_gets_no_reply(context: zmq.Context, server: tuple[zmq.Socket, str]) -> None:  # type: ignore[type-arg]
    rep, endpoint = server
    req = _client(context, endpoint)
    req.send(b'{"op":"start"}')
    assert _receive(rep, SILENCE_S) is None
    assert _receive(req, SILENCE_S) is None


def test_client_with_a_wrong_server_key_gets_no_reply(context: zmq.Context, server: tuple[zmq.Socket, str]) -> None:  # type: ignore[type-arg]
    rep, endpoint = server
    impostor_public, _ = generate_keypair()
    req = _client(context, endpoint, server_public_key=impostor_public)
    req.send(b'{"op":"start"}')
    assert _receive(rep, SILENCE_S) is None
    assert _receive(req, SILENCE_S) is None
