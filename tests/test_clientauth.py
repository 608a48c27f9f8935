"""daemon.curve_clients_dir: over real tcp with CURVE, only clients whose certificate is listed get an answer."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until

from syncctl import SyncClient, SyncdUnreachable
from syncd.control.curve import create_client_certificate, generate_keypair, load_client_certificate
from syncd.security import main

SERVER_PUBLIC, SERVER_SECRET = generate_keypair()
SILENCE_S = 0.5  # a client that must get no answer waits this long


def free_tcp_endpoint() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{sock.getsockname()[1]}"


def syncctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncctl.cli", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


@pytest.fixture
def certificates(short_tmp: Path) -> dict[str, Path]:
    """Certificates of `web` (listed in the daemon's directory) and `stranger` (not listed)."""
    keys = short_tmp / "keys"
    keys.mkdir()
    listed = short_tmp / "clients"
    listed.mkdir()
    web_public, web_secret = create_client_certificate(keys, "web")
    _stranger_public, stranger_secret = create_client_certificate(keys, "stranger")
    (listed / "web.key").write_bytes(web_public.read_bytes())
    return {"web": web_secret, "stranger": stranger_secret, "dir": listed}


def curve_daemon(syncd_factory: Any, clients_dir: Path | None, key_file: Path | None) -> Any:
    """A syncd on tcp with CURVE; its readiness probe (and `client()`) use `key_file`."""
    daemon = syncd_factory({"daemon": {"endpoint": free_tcp_endpoint(), "curve_public_key": SERVER_PUBLIC,
                                       "curve_secret_key": SERVER_SECRET,
                                       "curve_clients_dir": str(clients_dir) if clients_dir else ""}}, start=False)
    daemon.client = lambda timeout=5.0: client(daemon, key_file, timeout)
    return daemon.start()


def client(daemon: Any, key_file: Path | None, timeout: float = 5.0, **kwargs: Any) -> SyncClient:
    return SyncClient(daemon.endpoint, timeout, server_public_key=SERVER_PUBLIC, client_key_file=key_file, **kwargs)


def test_a_listed_client_gets_answers(syncd_factory, certificates) -> None:
    daemon = curve_daemon(syncd_factory, certificates["dir"], certificates["web"])
    assert daemon.client().ping().pid == daemon.proc.pid
    (loaded,) = daemon.events("curve_clients_loaded")
    assert loaded["clients"] == 1
    public, secret = load_client_certificate(certificates["web"])
    assert client(daemon, None, client_secret_key=secret).status().state == "idle"  # the key itself, not the file
    assert daemon.events("client_refused") == [] and daemon.events("curve_open_access") == []


def test_an_unlisted_client_gets_no_answer_and_is_logged_with_its_public_key(syncd_factory, certificates) -> None:
    daemon = curve_daemon(syncd_factory, certificates["dir"], certificates["web"])
    with pytest.raises(SyncdUnreachable):
        client(daemon, certificates["stranger"], SILENCE_S).status()
    stranger_public, _ = load_client_certificate(certificates["stranger"])
    refused = wait_until(lambda: daemon.events("client_refused"), what="client_refused")
    assert refused[0]["client_key"] == stranger_public and refused[0]["level"] == "warning"
    assert daemon.client().ping()  # the listed client is unaffected


def test_a_client_without_its_own_key_gets_no_answer(syncd_factory, certificates) -> None:
    daemon = curve_daemon(syncd_factory, certificates["dir"], certificates["web"])
    with pytest.raises(SyncdUnreachable):
        client(daemon, None, SILENCE_S).ping()  # CURVE with a throw-away keypair
    with pytest.raises(SyncdUnreachable):
        SyncClient(daemon.endpoint, SILENCE_S).ping()  # no CURVE at all


def test_sighup_reloads_the_directory_revoking_removed_and_admitting_added_clients(syncd_factory, certificates) -> None:
    daemon = curve_daemon(syncd_factory, certificates["dir"], certificates["web"])
    stranger_public, _ = load_client_certificate(certificates["stranger"])
    (certificates["dir"] / "stranger.key").write_text(f'curve\n    public-key = "{stranger_public}"\n')
    (certificates["dir"] / "web.key").unlink()
    daemon.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: [e for e in daemon.events("curve_clients_loaded") if e.get("reason") == "SIGHUP"], what="reload")
    assert client(daemon, certificates["stranger"]).ping()
    with pytest.raises(SyncdUnreachable):
        client(daemon, certificates["web"], SILENCE_S).ping()
    assert daemon.proc.poll() is None  # SIGHUP reloads; it never stops syncd


def test_syncctl_uses_the_client_key_from_the_flag_or_SYNCD_CLIENT_KEY(syncd_factory, certificates) -> None:
    daemon = curve_daemon(syncd_factory, certificates["dir"], certificates["web"])
    common = ("--endpoint", daemon.endpoint, "--server-key", SERVER_PUBLIC, "--timeout", "1")
    assert syncctl(*common, "--client-key", str(certificates["web"]), "ping").returncode == 0
    assert syncctl(*common, "ping", env={"SYNCD_CLIENT_KEY": str(certificates["web"])}).returncode == 0
    assert syncctl(*common, "--client-key", str(certificates["stranger"]), "ping").returncode == 1
    no_server_key = syncctl("--endpoint", daemon.endpoint, "--client-key", str(certificates["web"]), "ping")
    assert no_server_key.returncode == 2 and "server's public key" in no_server_key.stderr


def test_a_public_certificate_is_refused_as_a_client_key_naming_the_file(certificates) -> None:
    public_file = certificates["dir"] / "web.key"
    with pytest.raises(ValueError, match="has no secret-key; use the NAME.key_secret file"):
        SyncClient("tcp://127.0.0.1:1", server_public_key=SERVER_PUBLIC, client_key_file=public_file)


def test_without_a_clients_dir_curve_stays_open_with_a_warning(syncd_factory) -> None:
    daemon = curve_daemon(syncd_factory, None, None)
    assert daemon.client().ping()  # any keypair that knows the server key gets in, as before
    (warning,) = daemon.events("curve_open_access")
    assert warning["level"] == "warning" and "curve_clients_dir" in warning["reason"]


def test_a_missing_clients_dir_stops_syncd_naming_the_key(syncd_factory, short_tmp) -> None:
    daemon = syncd_factory({"daemon": {"endpoint": free_tcp_endpoint(), "curve_public_key": SERVER_PUBLIC,
                                       "curve_secret_key": SERVER_SECRET, "curve_clients_dir": "no-such-dir"}},
                           start=False)
    assert daemon.spawn().wait(60) == 78
    assert "daemon.curve_clients_dir:" in daemon.log_text() and "no-such-dir is not a directory" in daemon.log_text()


def test_keygen_client_writes_a_public_and_a_private_certificate_and_never_overwrites(short_tmp, capsys) -> None:
    assert main(["keygen", "--client", "web", "--dir", str(short_tmp)]) == 0
    public, secret = short_tmp / "web.key", short_tmp / "web.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "secret-key" not in public.read_text()
    public_key, _ = load_client_certificate(secret)
    assert f'public-key = "{public_key}"' in public.read_text()
    assert "curve_clients_dir" in capsys.readouterr().out
    before = secret.read_bytes()
    assert main(["keygen", "--client", "web", "--dir", str(short_tmp)]) == 1
    assert secret.read_bytes() == before
