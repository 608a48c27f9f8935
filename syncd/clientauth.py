"""CURVE client authentication: only clients whose certificate is in `daemon.curve_clients_dir` get in.

CURVE alone authenticates the server to its clients; ZeroMQ authenticates clients through a
ZAP handler, and pyzmq ships one (`zmq.auth.ThreadAuthenticator`, a thread on the daemon's
zmq Context). This module owns the allowed keys: the public certificates (`NAME.key`, as
`zmq.auth.create_certificates` and `python -m syncd.security keygen --client NAME` write
them) in the directory, loaded at start (a missing directory or a bad file stops syncd naming
it) and again on SIGHUP (`reload`; a bad directory then keeps the keys already loaded). A
client whose key is not there gets no answer (the handshake fails) and is logged
`client_refused` with its public key (Z85), at most once a minute per key.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import zmq
from zmq.auth import load_certificate
from zmq.auth.thread import ThreadAuthenticator

from .config import ConfigError
from .logs import Event, get_logger
from .security import key_problem

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
