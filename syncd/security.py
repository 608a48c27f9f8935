"""Control-endpoint security: who may reach the daemon's REP socket, and CURVE set-up.

This module owns the rule that the control socket is never open to the network without
authentication: an ipc:// endpoint is guarded by file permissions (socket_mode, the syncd
group), a tcp:// endpoint on loopback by the host, and any other tcp:// endpoint only by
ZeroMQ CURVE (the daemon's keypair in [daemon] curve_public_key / curve_secret_key; a client
must know the daemon's public key). It checks endpoints and Z85 keys, sets the CURVE socket
options on both sides, and generates keys (`python -m syncd.security keygen`). It must not
bind, connect or log; the daemon and the client own their sockets.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence

import zmq

from syncd.config import ConfigError

Z85_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
Z85_KEY_LENGTH = 40  # a 32-byte CURVE key in Z85
README_CURVE = 'README, section "Remote access with CURVE"'
_LOOPBACK_NAMES = frozenset({"localhost"})
_Z85_VALUES = {char: value for value, char in enumerate(Z85_ALPHABET)}


def check_endpoint(endpoint: str, curve_public_key: str, curve_secret_key: str) -> None:
    """Raise ConfigError unless `endpoint` may be bound with these keys: malformed or
    mismatched keys always fail; a tcp:// endpoint beyond loopback needs both keys."""
    if curve_public_key or curve_secret_key:
        _check_server_keys(curve_public_key, curve_secret_key)
        return
    if endpoint.startswith("tcp://") and not is_loopback_endpoint(endpoint):
        raise ConfigError(
            f"daemon.endpoint: {endpoint} accepts connections from other hosts, and without CURVE keys anyone "
            "who reaches it could start and cancel syncs; set daemon.curve_public_key and daemon.curve_secret_key "
            f"(generate them with `python -m syncd.security keygen`; see the {README_CURVE}), "
            "or bind tcp://127.0.0.1:PORT or an ipc:// endpoint"
        )


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for tcp:// endpoints whose host is 127.0.0.0/8, ::1 or localhost."""
    if not endpoint.startswith("tcp://"):
        return False
    host, sep, _port = endpoint[len("tcp://"):].rpartition(":")
    if not sep:
        return False
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # "*", an interface name, a host name: not provably loopback
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def key_problem(key: str) -> str | None:
    """Why `key` is not a Z85-encoded CURVE key, or None when it is one."""
    if len(key) != Z85_KEY_LENGTH:
        return f"expected {Z85_KEY_LENGTH} Z85 characters, got {len(key)}"
    bad = sorted({char for char in key if char not in _Z85_VALUES})
    if bad:
        return f"expected Z85 characters, got {''.join(bad)!r}"
    for start in range(0, Z85_KEY_LENGTH, 5):
        value = 0
        for char in key[start:start + 5]:
            value = value * 85 + _Z85_VALUES[char]
        if value >= 2**32:
            return f"not valid Z85 (characters {start + 1}-{start + 5} encode more than 32 bits)"
    return None


def _check_server_keys(public_key: str, secret_key: str) -> None:
    for name, key in (("curve_public_key", public_key), ("curve_secret_key", secret_key)):
        if not key:
            other = "curve_secret_key" if name == "curve_public_key" else "curve_public_key"
            raise ConfigError(f"daemon.{name}: missing; CURVE needs both keys, and daemon.{other} is set (see the {README_CURVE})")
        problem = key_problem(key)
        if problem:
            raise ConfigError(f"daemon.{name}: {problem} (generate a keypair with `python -m syncd.security keygen`)")
    if not zmq.has("curve"):
        raise ConfigError(f"daemon.curve_public_key: this libzmq {zmq.zmq_version()} was built without CURVE support")
    if zmq.curve_public(secret_key.encode("ascii")).decode("ascii") != public_key:
        raise ConfigError("daemon.curve_public_key: does not belong to daemon.curve_secret_key; copy both lines from one `python -m syncd.security keygen`")


def apply_server_curve(socket: zmq.Socket, public_key: str, secret_key: str) -> None:  # type: ignore[type-arg]
    """Make `socket` a CURVE server with this keypair; call before bind()."""
    socket.curve_secretkey = secret_key.encode("ascii")
    socket.curve_publickey = public_key.encode("ascii")
    socket.curve_server = True


def apply_client_curve(
    socket: zmq.Socket,  # type: ignore[type-arg]
    server_public_key: str,
    client_public_key: str | None = None,
    client_secret_key: str | None = None,
) -> None:
    """Make `socket` a CURVE client of the server with `server_public_key`; call before
    connect(). Without a client keypair an ephemeral one is generated. Raises ValueError
    for a malformed key."""
    problem = key_problem(server_public_key)
    if problem:
        raise ValueError(f"server public key: {problem}")
    if client_public_key is None or client_secret_key is None:
        public, secret = zmq.curve_keypair()
    else:
        public, secret = client_public_key.encode("ascii"), client_secret_key.encode("ascii")
    socket.curve_serverkey = server_public_key.encode("ascii")
    socket.curve_publickey = public
    socket.curve_secretkey = secret


def generate_keypair() -> tuple[str, str]:
    """A new CURVE keypair as (public, secret) Z85 strings."""
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


def keygen_toml() -> str:
    """A fresh keypair as the two [daemon] lines of config.toml."""
    public, secret = generate_keypair()
    return (
        "# syncd CURVE keypair: put both lines under [daemon] in the daemon's config.toml.\n"
        "# The secret key never leaves that host; clients need only the public key\n"
        "# (SyncClient(endpoint, server_public_key=...), syncctl --server-key, SYNCD_SERVER_KEY).\n"
        f'curve_public_key = "{public}"\n'
        f'curve_secret_key = "{secret}"\n'
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m syncd.security", description="syncd endpoint security tools")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("keygen", help="print a new CURVE keypair as TOML lines for [daemon]")
    args = parser.parse_args(argv)
    if args.command == "keygen":
        if not zmq.has("curve"):
            print(f"syncd: this libzmq {zmq.zmq_version()} was built without CURVE support", file=sys.stderr)
            return 1
        sys.stdout.write(keygen_toml())
    return 0


if __name__ == "__main__":
    sys.exit(main())
