"""CURVE on the control socket: who may reach the daemon's REP socket, its keys, and the client allowlist.

This module owns the rule that the control socket is never open to the network without
authentication: an ipc:// endpoint is guarded by file permissions (socket_mode, the syncd
group), a tcp:// endpoint on loopback by the host, and any other tcp:// endpoint only by
ZeroMQ CURVE (the daemon's keypair in [daemon] curve_public_key / curve_secret_key; a client
must know the daemon's public key). It checks endpoints and Z85 keys, sets the CURVE socket
options on both sides, reads client certificates, and makes keys and certificates (the
command is `python -m syncd.security keygen [--client NAME]`, syncd/security.py).

The allowlist: CURVE alone authenticates the server to its clients; ZeroMQ authenticates
clients through a ZAP handler, and pyzmq ships one (`zmq.auth.ThreadAuthenticator`, a thread
on the daemon's zmq Context). `ClientAuthenticator` owns the allowed keys: the public
certificates (`NAME.key`) in `daemon.curve_clients_dir`, loaded at start (a missing directory
or a bad file stops syncd naming it) and again on SIGHUP (`reload`; a bad directory then keeps
the keys already loaded). A client whose key is not there gets no answer (the handshake fails)
and is logged `client_refused` with its public key (Z85), at most once a minute per key. Only
that class logs; nothing here binds or connects: the daemon and the client own their sockets.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import zmq
from zmq.auth import load_certificate
from zmq.auth.thread import ThreadAuthenticator

from ..config import ConfigError
from ..logs import Event, get_logger

Z85_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
Z85_KEY_LENGTH = 40  # a 32-byte CURVE key in Z85
README_CURVE = 'docs/operations.md, section "Remote access with CURVE"'
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


def apply_server_curve(socket: zmq.Socket[Any], public_key: str, secret_key: str) -> None:
    """Make `socket` a CURVE server with this keypair; call before bind()."""
    socket.curve_secretkey = secret_key.encode("ascii")
    socket.curve_publickey = public_key.encode("ascii")
    socket.curve_server = True


def apply_client_curve(
    socket: zmq.Socket[Any],
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


def load_client_certificate(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(public, secret) Z85 keys of a client's secret certificate (`NAME.key_secret`); ValueError naming the file."""
    from zmq.auth import load_certificate

    try:
        public, secret = load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ValueError(f"client key file {path}: cannot read a certificate ({exc})") from None
    if secret is None:
        raise ValueError(f"client key file {path}: has no secret-key; use the NAME.key_secret file "
                         "(NAME.key, the public half, goes into the daemon's curve_clients_dir)")
    public_text, secret_text = public.decode("ascii", errors="replace"), secret.decode("ascii", errors="replace")
    for what, key in (("public-key", public_text), ("secret-key", secret_text)):
        if problem := key_problem(key):
            raise ValueError(f"client key file {path}: its {what} is not a CURVE key ({problem})")
    if zmq.curve_public(secret).decode("ascii") != public_text:
        raise ValueError(f"client key file {path}: its public-key does not belong to its secret-key")
    return public_text, secret_text


def client_public_key(secret_key: str) -> str:
    """The public half of a client's Z85 secret key; ValueError if it is not one."""
    if problem := key_problem(secret_key):
        raise ValueError(f"client secret key: {problem}")
    return zmq.curve_public(secret_key.encode("ascii")).decode("ascii")


def create_client_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """NAME.key (public: for the daemon's curve_clients_dir) and NAME.key_secret (0600: for the client) in
    `directory`; FileExistsError rather than overwrite either."""
    from zmq.auth import create_certificates

    public_file, secret_file = directory / f"{name}.key", directory / f"{name}.key_secret"
    for file in (public_file, secret_file):
        if file.exists():
            raise FileExistsError(f"{file} exists; choose another name or remove it first")
    old_umask = os.umask(0o077)  # the secret file is born private
    try:
        create_certificates(directory, name, metadata={"name": name})
    finally:
        os.umask(old_umask)
    public_file.chmod(0o644)
    return public_file, secret_file


REFUSAL_LOG_EVERY_S = 60.0  # a refused client retries every ~100 ms: one line a minute per key is enough


def load_client_keys(directory: Path) -> frozenset[bytes]:
    """The Z85 public keys of every `*.key` certificate in `directory`; ConfigError naming what is wrong."""
    if not directory.is_dir():
        raise ConfigError(f"daemon.curve_clients_dir: {directory} is not a directory "
                          "(create it and put client certificates there: python -m syncd.security keygen --client NAME)")
    keys = set()
    try:
        files = sorted(directory.glob("*.key"))
    except OSError as exc:
        raise ConfigError(f"daemon.curve_clients_dir: cannot read {directory}: {exc.strerror}") from None
    for file in files:
        try:
            public, _secret = load_certificate(file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"daemon.curve_clients_dir: {file}: not a certificate ({exc})") from None
        problem = key_problem(public.decode("ascii", errors="replace"))
        if problem:
            raise ConfigError(f"daemon.curve_clients_dir: {file}: its public-key is not a CURVE key ({problem})")
        keys.add(public)
    return frozenset(keys)


class ClientKeys:
    """The ZAP credentials provider: `callback(domain, key)` says whether a client's key may connect."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._keys: frozenset[bytes] = frozenset()
        self._last_logged: dict[bytes, float] = {}
        self._refused_since_log: dict[bytes, int] = {}
        self._lock = threading.Lock()
        self._log = get_logger()

    def load(self) -> int:
        keys = load_client_keys(self.directory)
        self._keys = keys  # one reference swap: the ZAP thread sees the old set or the new one
        return len(keys)

    def callback(self, domain: str, key: bytes) -> bool:
        """Called on the ZAP thread for every CURVE handshake; `key` is the client's public key in Z85."""
        if key in self._keys:
            return True
        now = time.monotonic()
        with self._lock:
            self._refused_since_log[key] = self._refused_since_log.get(key, 0) + 1
            if now - self._last_logged.get(key, -REFUSAL_LOG_EVERY_S) < REFUSAL_LOG_EVERY_S:
                return False
            if len(self._last_logged) > 1000:  # a key-rotating scanner must not grow this without bound
                self._last_logged.clear()
            self._last_logged[key] = now
            attempts = self._refused_since_log.pop(key)
        self._log.warning(Event.CLIENT_REFUSED, client_key=key.decode("ascii", errors="replace"), attempts=attempts,
                          reason=f"no certificate with this public key in {self.directory}")
        return False


class ClientAuthenticator:
    """pyzmq's ZAP handler on `context`, admitting the keys of `directory`. Start before binding the socket."""

    def __init__(self, context: zmq.Context[Any], directory: Path) -> None:
        self.keys = ClientKeys(directory)
        self._auth = ThreadAuthenticator(context, log=_quiet_zmq_auth_log())
        self._log = get_logger()

    def start(self) -> None:
        count = self.keys.load()  # a bad directory refuses the start before the thread exists
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=self.keys)
        self._log.info(Event.CURVE_CLIENTS_LOADED, clients=count, directory=str(self.keys.directory))

    def reload(self) -> None:
        """Read the directory again (SIGHUP): added certificates get in, removed ones are refused from now on."""
        try:
            count = self.keys.load()
        except ConfigError as exc:
            self._log.error(Event.CURVE_CLIENTS_RELOAD_FAILED, error=str(exc), kept="the keys loaded before")
            return
        self._log.info(Event.CURVE_CLIENTS_LOADED, clients=count, directory=str(self.keys.directory), reason="SIGHUP")

    def stop(self) -> None:
        self._auth.stop()


def _quiet_zmq_auth_log() -> logging.Logger:
    """zmq.auth logs every handshake at debug through stdlib logging; ours is structlog's `client_refused`."""
    log = logging.getLogger("syncd.zmq.auth")
    log.propagate = False
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return log
