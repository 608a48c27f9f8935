"""Start-up faults: each ends a real `python -m syncd` with one line, the right exit code, no traceback.

Exit codes (syncd/__main__.py): 78 (EX_CONFIG, not restarted by systemd) for what only an
operator can fix: the config, the DSN, state_dir, the socket path, another daemon on the
socket; 1 for a database that cannot be reached (systemd retries). Every case asserts the
code, exactly one error line `syncd: ...` naming the key or path, no "Traceback", no
password, and an exit within a deadline. Tests run as root here, where file modes do not
bind: the permission cases then run syncd without CAP_DAC_OVERRIDE instead.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import zmq
from conftest import BASE_CONFIG, merge, toml_dumps, wait_until

pytestmark = pytest.mark.fault

DEADLINE_S = 30.0
EX_CONFIG = 78
SECRET = "hunter2-s3cr3t"


@dataclass
class Outcome:
    code: int
    output: str
    elapsed: float

    def error_line(self) -> str:
        """The one line that is not an info/debug JSON log event; fails unless there is exactly one."""
        others = [line for line in self.output.splitlines() if line.strip() and not _routine_event(line)]
        assert len(others) == 1, f"expected exactly one error line, got {len(others)}:\n{self.output}"
        return others[0]


def _routine_event(line: str) -> bool:
    try:
        event = json.loads(line)
    except ValueError:
        return False
    return isinstance(event, dict) and event.get("level") in ("debug", "info")


def run_syncd(folder: Path, config: dict[str, Any] | str | None, env: dict[str, str] | None = None,
              preexec_fn: Any = None, config_path: Path | None = None) -> Outcome:
    """Run `python -m syncd --config ...` to its exit (failing the test past DEADLINE_S)."""
    path = config_path or folder / "config.toml"
    if config is not None:
        path.write_text(config if isinstance(config, str) else toml_dumps(config))
    began = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "--config", str(path)], cwd=folder, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
    try:
        out, err = proc.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"syncd still running after {DEADLINE_S}s:\n{out}{err}") from None
    return Outcome(proc.returncode, out + err, time.monotonic() - began)


def assert_refused(outcome: Outcome, code: int, *names: str, secret: str = SECRET) -> str:
    assert outcome.code == code, f"exit code {outcome.code}, expected {code}:\n{outcome.output}"
    assert "Traceback" not in outcome.output
    assert secret not in outcome.output
    line = outcome.error_line()
    assert line.startswith("syncd: "), line
    for name in names:
        assert name in line, f"{name!r} not in {line!r}"
    return line


def config_for(dsn: str, **sections: dict[str, Any]) -> dict[str, Any]:
    return merge(merge(BASE_CONFIG, {"database": {"dsn": dsn, "connect_timeout_s": 2.0}}), sections)


def with_params(dsn: str, **params: Any) -> str:
    return psycopg.conninfo.make_conninfo(dsn, **params)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _schema_exists(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT to_regclass('syncd_migrations') IS NOT NULL").fetchone()[0]


# --- running without the power to ignore file modes ------------------------------------------

def _drop_dac_override() -> None:
    """preexec_fn: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so that
    after exec even uid 0 obeys file modes (PR_CAPBSET_DROP = 24)."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.fixture
def obey_modes(short_tmp: Path) -> Any:
    """A preexec_fn (or None) under which a child process cannot write into a 0500 directory."""
    if os.geteuid() != 0:
        return None
    folder = short_tmp / "mode-probe"
    folder.mkdir(mode=0o500)
    try:
        probe = subprocess.run([sys.executable, "-c", f"open({str(folder / 'x')!r}, 'w')"], preexec_fn=_drop_dac_override,
                               capture_output=True, timeout=30, check=False)
    except subprocess.SubprocessError as exc:
        pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE ({exc}): file modes do not bind")
    finally:
        folder.chmod(0o700)
    if probe.returncode == 0:
        pytest.skip("running as root and file modes still do not bind without CAP_DAC_OVERRIDE")
    return _drop_dac_override


# --- state_dir -------------------------------------------------------------------------------

def test_state_dir_under_a_regular_file(short_tmp, database):
    (short_tmp / "file").write_text("not a folder")
    outcome = run_syncd(short_tmp, config_for(database, daemon={"state_dir": "file/state"}))
    assert_refused(outcome, EX_CONFIG, "daemon.state_dir", str(short_tmp / "file" / "state"), "Not a directory")
    assert not _schema_exists(database)


def test_state_dir_that_is_a_regular_file(short_tmp, database):
    (short_tmp / "state").write_text("not a folder")
    outcome = run_syncd(short_tmp, config_for(database, daemon={"state_dir": "state"}))
    assert_refused(outcome, EX_CONFIG, "daemon.state_dir", str(short_tmp / "state"), "not a directory")


def test_state_dir_without_write_permission(short_tmp, database, obey_modes):
    state = short_tmp / "state"
    state.mkdir(mode=0o500)
    try:
        outcome = run_syncd(short_tmp, config_for(database), preexec_fn=obey_modes)
    finally:
        state.chmod(0o700)
    assert_refused(outcome, EX_CONFIG, "daemon.state_dir", str(state / "syncd.lock"), "Permission denied")
    assert not _schema_exists(database)


# --- the ipc socket path ---------------------------------------------------------------------

def test_libzmq_ipc_bind_silently_unlinks_a_regular_file(short_tmp):
    """Why syncd checks the path itself: libzmq would delete the file without a word."""
    victim = short_tmp / "precious.txt"
    victim.write_text("data")
    with zmq.Context() as context, context.socket(zmq.REP) as rep:
        rep.bind(f"ipc://{victim}")
        assert stat.S_ISSOCK(victim.lstat().st_mode)


@pytest.mark.parametrize("kind", ["file", "directory", "symlink"])
def test_socket_path_taken_by_something_else_is_left_alone(short_tmp, database, kind):
    path = short_tmp / "syncd.sock"
    target = short_tmp / "target.txt"
    target.write_text("keep me")
    if kind == "file":
        path.write_text("keep me")
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(target)
    # an absolute endpoint: a relative one is resolved, symlinks and all, against the config's folder
    outcome = run_syncd(short_tmp, config_for(database, daemon={"endpoint": f"ipc://{path}"}))
    expected = {"file": "a regular file", "directory": "a directory", "symlink": "a symbolic link"}[kind]
    assert_refused(outcome, EX_CONFIG, "daemon.endpoint", str(path), expected, "not a socket")
    if kind == "file":
        assert path.read_text() == "keep me"
    assert path.is_dir() if kind == "directory" else path.exists()
    assert target.read_text() == "keep me"
    assert not _schema_exists(database)  # refused before touching the database


def test_stale_socket_of_a_killed_daemon_is_replaced(syncd_factory):
    daemon = syncd_factory()
    path = Path(daemon.endpoint[len("ipc://"):])
    daemon.kill()
    assert stat.S_ISSOCK(path.lstat().st_mode)  # SIGKILL left the socket behind
    daemon.start()
    assert daemon.client().ping().pid == daemon.proc.pid


def test_socket_of_a_live_syncd_is_not_stolen(syncd_factory):
    first = syncd_factory()
    pid = first.client().ping().pid
    inode = os.stat(first.endpoint[len("ipc://"):]).st_ino
    # a second daemon, its own state_dir (so the instance lock does not stop it), same socket
    second = syncd_factory({"daemon": {"endpoint": first.endpoint, "state_dir": "state2"}}, start=False, name="second")
    outcome = run_syncd(second.folder, None, config_path=second.config_path)
    assert_refused(outcome, EX_CONFIG, "daemon.endpoint", first.endpoint[len("ipc://"):], "listening")
    assert os.stat(first.endpoint[len("ipc://"):]).st_ino == inode
    assert first.client().ping().pid == pid
    assert first.client().start("2025-10-09", "2025-10-09").run_id
    first.wait_idle()


def test_two_daemons_racing_for_one_socket_path_leave_exactly_one_serving(syncd_factory):
    """Different state_dirs, the same ipc path, started together: the socket's lock file decides."""
    first = syncd_factory({"daemon": {"state_dir": "s1"}}, start=False, name="first")
    endpoint = first.endpoint
    second = syncd_factory({"daemon": {"endpoint": endpoint, "state_dir": "s2"}}, start=False, name="second")
    procs = [first.spawn(), second.spawn()]
    loser = wait_until(lambda: next((p for p in procs if p.poll() is not None), None), timeout=DEADLINE_S,
                       what="one of the two daemons to refuse")
    winner = procs[1 - procs.index(loser)]
    assert loser.returncode == EX_CONFIG
    lines = [line for line in (first if loser is procs[0] else second).log_text().splitlines() if line.startswith("syncd:")]
    assert len(lines) == 1 and "daemon.endpoint" in lines[0] and f"pid {winner.pid}" in lines[0], lines
    serving = first if winner is procs[0] else second
    serving.wait_ready()
    assert serving.client().ping().pid == winner.pid


def test_socket_with_any_live_listener_is_not_stolen(short_tmp, database):
    path = short_tmp / "syncd.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        outcome = run_syncd(short_tmp, config_for(database))
        assert_refused(outcome, EX_CONFIG, "daemon.endpoint", str(path), "listening")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))  # still the listener's socket


# --- the database ----------------------------------------------------------------------------

def test_unreachable_database_exits_1_at_once(short_tmp):
    dsn = f"postgresql://syncd:{SECRET}@127.0.0.1:{closed_port()}/market"
    outcome = run_syncd(short_tmp, config_for(dsn))
    line = assert_refused(outcome, 1, "cannot connect to the database", "127.0.0.1", "Connection refused")
    assert "***" in line
    assert outcome.elapsed < 10, outcome.elapsed


def test_a_start_refused_by_the_database_leaves_no_fetch_process(short_tmp):
    """The demo's fetch process starts before the database is reached (its warm-up overlaps it): a start that
    fails there ends it too, at once."""
    outcome = run_syncd(short_tmp, config_for(f"postgresql://syncd:{SECRET}@127.0.0.1:{closed_port()}/market"))
    assert_refused(outcome, 1, "cannot connect to the database")
    started = [json.loads(line) for line in outcome.output.splitlines() if '"fetch_process_started"' in line]
    assert len(started) == 1
    assert not Path(f"/proc/{started[0]['pid']}").exists()  # killed and reaped before the daemon exited


def test_database_that_never_answers_exits_1_after_connect_timeout(short_tmp):
    """A server that accepts TCP but never speaks: syncd gives up at database.connect_timeout_s."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # never accepted: the kernel completes the handshake, nobody answers
        dsn = f"host=127.0.0.1 port={silent.getsockname()[1]} dbname=market user=syncd password={SECRET}"
        outcome = run_syncd(short_tmp, config_for(dsn, database={"connect_timeout_s": 3.0}))
    assert_refused(outcome, 1, "cannot connect to the database", "127.0.0.1", "timeout", "connect_timeout_s")
    assert 3.0 <= outcome.elapsed < 3.0 + 10, outcome.elapsed


@pytest.mark.parametrize("change,names", [
    ({"dbname": "no_such_database"}, ['database "no_such_database" does not exist']),
    ({"user": "no_such_role"}, ['role "no_such_role" does not exist']),
])
def test_database_that_refuses_the_dsn_exits_78(short_tmp, pg_dsn, change, names):
    dsn = with_params(pg_dsn, **change, password=SECRET)
    outcome = run_syncd(short_tmp, config_for(dsn))
    assert_refused(outcome, EX_CONFIG, "database.dsn", *names)


@pytest.fixture
def wrong_password_dsn(pg_dsn: str) -> Any:
    """A DSN of a real role with a wrong password, on a server that checks passwords.

    The session PostgreSQL (pgserver) trusts local connections; when its pg_hba.conf is ours
    to edit, this role alone is made to authenticate with scram-sha-256 for the test."""
    role, password = f"pw_{secrets.token_hex(4)}", f"right-{secrets.token_hex(4)}"
    wrong = with_params(pg_dsn, user=role, password=SECRET, dbname="postgres")
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        try:
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        except psycopg.Error as exc:
            pytest.skip(f"cannot create a role on the test PostgreSQL: {exc}")
        hba = Path(conn.execute("SHOW hba_file").fetchone()[0])
    original = None
    try:
        if _connects(wrong):
            if not os.access(hba, os.W_OK):
                pytest.skip("the test PostgreSQL does not check passwords and its pg_hba.conf is not ours to change")
            original = hba.read_text()
            hba.write_text("".join(f"{kind} all {role} {where} scram-sha-256\n" for kind, where in
                                   (("local", ""), ("host", "127.0.0.1/32"), ("host", "::1/128"))) + original)
            _reload(pg_dsn)
            wait_until(lambda: not _connects(wrong), 10, what="PostgreSQL to require the role's password")
        yield wrong
    finally:
        if original is not None:
            hba.write_text(original)
            _reload(pg_dsn)
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def _connects(dsn: str) -> bool:
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
        return True
    except psycopg.OperationalError:
        return False


def _reload(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")


def test_wrong_password_exits_78(short_tmp, wrong_password_dsn):
    outcome = run_syncd(short_tmp, config_for(wrong_password_dsn))
    assert_refused(outcome, EX_CONFIG, "database.dsn", "password authentication failed")


@pytest.mark.parametrize("dsn,env_key", [
    (f"host=127.0.0.1 password='{SECRET}", None),                 # unterminated quote
    (f"postgresql://syncd:{SECRET}%zz@127.0.0.1/market", None),     # libpq quotes the bad token: the password
    (f"host=127.0.0.1 password={SECRET} {SECRET[:7]}", None),       # an unquoted space inside a password
    ("nonsense", None),
    (f"postgresql://syncd:{SECRET}@[::1/market", "SYNCD_DSN"),
])
def test_malformed_dsn_exits_78_naming_the_key(short_tmp, dsn, env_key):
    if env_key:
        outcome = run_syncd(short_tmp, config_for(""), env={env_key: dsn})
    else:
        outcome = run_syncd(short_tmp, config_for(dsn))
    assert_refused(outcome, EX_CONFIG, f"{env_key or 'database.dsn'}: not a valid PostgreSQL connection string",
                   secret=SECRET[:7])
    assert not (short_tmp / "state" / "pgdata").exists()  # no embedded database started instead


# --- the config file (tests/test_config.py covers the messages of parse_config) --------------

@pytest.mark.parametrize("text,names", [
    (b"[daemon\nstate_dir = 'x'\n", ["config.toml", "not valid TOML"]),
    (b"[database]\nconnect_timeout_s = \"fast\"\n", ["database.connect_timeout_s", "float"]),
    (b"[database]\nconnect_timeout_s = 0\n", ["database.connect_timeout_s", "> 0"]),
    (b"daemon = \"ipc://x\"\n", ["daemon", "object"]),
    (b"[databse]\ndsn = \"\"\n", ["databse"]),
    (b"[source.demo]\nstock = 10\n", ["stock", "source.demo"]),
    (b"[daemon]\nstate_dir = \"\xff\xfe\"\n", ["config.toml"]),
])
def test_bad_config_file_exits_78_with_one_line(short_tmp, text, names):
    path = short_tmp / "config.toml"
    path.write_bytes(text)
    assert_refused(run_syncd(short_tmp, None, config_path=path), EX_CONFIG, *names)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_config_path_that_is_not_a_file(short_tmp, kind):
    path = short_tmp / "config.toml"
    if kind == "directory":
        path.mkdir()
    outcome = run_syncd(short_tmp, None, config_path=path)
    reason = {"missing": "No such file or directory", "directory": "Is a directory"}[kind]
    assert_refused(outcome, EX_CONFIG, "cannot read config file", str(path), reason)


def test_unreadable_config_file(short_tmp, obey_modes):
    path = short_tmp / "config.toml"
    path.write_text("")
    path.chmod(0o000)
    outcome = run_syncd(short_tmp, None, config_path=path, preexec_fn=obey_modes)
    assert_refused(outcome, EX_CONFIG, "cannot read config file", str(path), "Permission denied")


def test_bad_endpoint_from_the_environment(short_tmp, database):
    outcome = run_syncd(short_tmp, config_for(database), env={"SYNCD_ENDPOINT": "syncd.sock"})
    assert_refused(outcome, EX_CONFIG, "SYNCD_ENDPOINT", "ipc://PATH", "'syncd.sock'")


def test_ctrl_c_while_waiting_for_the_database(short_tmp):
    """SIGINT before the loop handles signals (here: mid-connect) is one line and 130, not a traceback."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent.settimeout(DEADLINE_S)
        dsn = f"host=127.0.0.1 port={silent.getsockname()[1]} dbname=market password={SECRET}"
        (short_tmp / "config.toml").write_text(toml_dumps(config_for(dsn, database={"connect_timeout_s": 20.0})))
        proc = subprocess.Popen([sys.executable, "-m", "syncd", "--config", str(short_tmp / "config.toml")], cwd=short_tmp,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            conn, _ = silent.accept()  # syncd is now waiting for the server's first word
            with conn:
                proc.send_signal(signal.SIGINT)
                out, _ = proc.communicate(timeout=DEADLINE_S)
        finally:
            proc.kill()
    assert_refused(Outcome(proc.returncode, out, 0.0), 130, "interrupted")
