"""The syncd process: start-up, the single-threaded control loop, and shutdown.

This module wires the parts together and owns their lifetimes: the instance lock, the
database (embedded or external) and its migrations and crash recovery, the control socket
(and, with daemon.curve_clients_dir, its ZAP client authenticator), the worker thread, the
reconcile thread, the schedule, telemetry (metrics, alerts, the freshness poller), signals and
sd_notify. The loop serves one request at a time; its poll timeout comes from the
scheduler's idle time, the watchdog interval and the deadlines of deferred replies, so an
idle daemon sleeps. Signal handlers only write to a wake-up socket; the loop does the work
(SIGTERM/SIGINT stop syncd, SIGHUP reloads the client certificates).

The control socket is a ROUTER: to a REQ client it behaves as REP (one reply per request,
in order), and it lets a reply wait without holding the loop: a `verify` with `against` is
answered when its reconciliation ends or its `wait_s` passes (ops.Deferred), while every
other request is served as it comes (docs/design.md, "Reconciliation").
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import signal
import socket
import stat
import sys
import time
import zoneinfo
from pathlib import Path
from typing import Any

import zmq

from .calendar import Confirms, TradingCalendar
from .config import Config, ConfigError, ipc_path, redact_dsn
from .control.admission import Admission
from .control.curve import ClientAuthenticator, apply_server_curve, check_endpoint
from .control.ops import Batch, Deferred, Ops
from .control.reads import ControlDb
from .control.reconcile import Reconciliations
from .control.runstate import RunState
from .control.scheduling import DailySchedule
from .db import connection, migrations, reference, runs
from .db.poolercheck import check_lock_session
from .db.privileges import check_schema
from .db.runlock import Orphans
from .embedded import EmbeddedPostgres
from .instance import InstanceLock
from .logs import Event, get_logger
from .preflight import check_database, claim_ipc_path
from .protocol import ErrorCode, ErrorReply, encode
from .record import RunRecord
from .run.reconciler import ReconcileBoard, Reconciler
from .run.syncer import Syncer
from .run.worker import Worker
from .sources import Source, SourceUnavailable, check_against, load_source
from .sources.fetchproc import FetchProcess
from .systemd import Notifier
from .telemetry.hub import Telemetry

# The worker's Python holds the GIL in long stretches; a request waiting on the control loop
# would wait up to the default 5 ms switch interval for it, more than once (bench/control.py).
GIL_SWITCH_INTERVAL_S = 0.0005
HARD_FRAME_LIMIT = 16 * 1024 * 1024  # zmq drops peers sending more; up to this we answer with an error
SHUTDOWN_GRACE_S = 8.0
SERVE_BURST = 64  # requests received, then answered as one batch, before the loop looks at signals and the schedule again
# How often the idle worker looks for runs left `running` by a daemon that died (another host's,
# typically): one indexed query, and a lock attempt only when such a row exists. On the worker,
# so an unreachable database never stalls the control loop.
ORPHAN_SWEEP_S = 10.0
UPGRADES_THAT_REWRITE = {7}  # migrations whose time grows with the history (db/partitions.narrow_code_index)
MIGRATION_EXTEND_S = 1800


class Daemon:
    def __init__(self, config: Config, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.env = os.environ if env is None else env
        self.log = get_logger()
        self.instance = InstanceLock.for_state_dir(config.daemon.state_dir)
        self.socket_lock: InstanceLock | None = None
        self.embedded: EmbeddedPostgres | None = None
        self.notifier = Notifier.from_env(self.env)
        self._wake_r, self._wake_w = socket.socketpair()
        self._signalled: list[int] = []
        self._hangup = False  # SIGHUP: reload the client certificates
        self.telemetry = Telemetry(config)
        self.client_auth: ClientAuthenticator | None = None
        self._deferred: list[tuple[list[bytes], Deferred]] = []  # replies waiting (envelope, what they wait for)
        self._last_run_seen: str | None = None  # the newest finished run the loop has handed to after_run

    # --- start-up ----------------------------------------------------------------------------
    def run(self) -> int:
        """Run until SIGTERM/SIGINT; return the process exit code."""
        check_endpoint(self.config.daemon.endpoint, self.config.daemon.curve_public_key, self.config.daemon.curve_secret_key)
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self._acquire_instance()
        try:
            self._claim_socket_path()  # before the database: a refused start touches nothing
            self.telemetry.bind()      # so is a metrics port in use
            return self._run_locked()
        finally:
            self.telemetry.close()
            if self.socket_lock is not None:
                self.socket_lock.release()
            self.instance.release()

    def _run_locked(self) -> int:
        source = load_source(self.config.source)
        fallbacks = self._fallback_sources()
        check_against(self.config.source, self.config.verify.against, self.env)  # its extra installed, its token set
        check_database(self.config.database, self.env)
        for each in (source, *fallbacks):
            self.telemetry.attach_source(each)
        # Started now, so that the source warms up in the child (the demo: numpy, its market's years) while the
        # database is made ready: a run requested as soon as the daemon answers finds it ready.
        fetcher = self._fetch_process(source)
        try:
            dsn = self._database_dsn()
            # The run lock's connection: database.lock_dsn (dsn's settings under its own), else dsn.
            lock_dsn = connection.inherit_options(self.config.database.lock_dsn, dsn) if self.config.database.lock_dsn else dsn
            if self._schema is not None:  # database.schema: the whole search_path of every connection
                dsn, lock_dsn = connection.in_schema(dsn, self._schema), connection.in_schema(lock_dsn, self._schema)
            calendar, last_run = self._prepare_database(dsn, lock_dsn, source.confirms_trading_day)
            state = RunState(last_run)
            observer = self.telemetry
            syncer = Syncer(self.config, dsn, source, calendar, lock_dsn, observer=observer, fetcher=fetcher,
                            fallbacks=fallbacks)
            worker = Worker(self.telemetry.reporting(syncer.run), state, self._wake, on_idle=syncer.housekeeping,
                            idle_every_s=ORPHAN_SWEEP_S)
            db = ControlDb(dsn, self.config, lock_dsn)
            admission = Admission(state, worker.submit, db, calendar, zoneinfo.ZoneInfo(self.config.schedule.timezone),
                                  observer=observer)
            sched = DailySchedule(self.config.schedule, admission.start_scheduled, calendar.kind,
                                  functools.partial(db.missing_days, is_trading_day=calendar.is_trading_day))
            board = ReconcileBoard()
            reconciler = Reconciler(self.config, dsn, board, self._wake, observer=observer)
            reconciliations = Reconciliations(self.config, db, board, reconciler.submit,
                                              zoneinfo.ZoneInfo(self.config.schedule.timezone))
            ops = Ops(self.config, state, admission, db, calendar, sched.jobs, "embedded" if self.embedded else "external",
                      observer=observer, reconciliations=reconciliations)
            self._last_run_seen = last_run.run_id if last_run is not None else None
            self.telemetry.start(dsn, state, calendar)
            with zmq.Context() as context:
                try:
                    self._authenticate_clients(context)
                    rep = self._bind(context)
                    worker.start()
                    reconciler.start()
                    self._install_signals()
                    self.log.info(Event.DAEMON_STARTED, endpoint=self.config.daemon.endpoint, pid=os.getpid(),
                                  source=self.config.source.name, database=redact_dsn(self.config.database.dsn))
                    self.notifier.ready()
                    self.notifier.status("idle")
                    sched.catch_up()
                    self._loop(rep, ops, sched, state, reconciliations)
                    self._shutdown(rep, ops, state, worker, syncer, reconciler)
                finally:
                    if self.client_auth is not None:  # its sockets must close before the context ends
                        self.client_auth.stop()
        finally:
            self.telemetry.close()  # the poller's connection goes before the database does
            if fetcher is not None:
                fetcher.close(grace_s=0.0)  # closed by the worker's syncer already, unless the start failed
            for each in (source, *fallbacks):
                each.close()
            if self.embedded is not None:
                self.embedded.stop()
            self.notifier.close()
        self.log.info(Event.DAEMON_STOPPED)
        return 0

    def _fallback_sources(self) -> list[Source]:
        """[source] fallback's sources, built as the primary is (a missing extra or setting stops the start, naming the key)."""
        built: list[Source] = []
        try:
            for position, name in enumerate(self.config.source.fallback):
                try:
                    built.append(load_source(self.config.source.of(name)))
                except SourceUnavailable as exc:
                    raise SourceUnavailable(f"source.fallback[{position}]: {exc}") from None
        except BaseException:
            for each in built:
                each.close()
            raise
        return built

    def _fetch_process(self, source: Source) -> FetchProcess | None:
        """The worker's child for a source that runs its fetches there, started here (the main thread, which lives as
        long as the daemon: the child dies with it) before the worker exists; from then on the worker supervises it."""
        if not source.fetches_in_child:
            return None
        fetcher = FetchProcess(self.config.source, on_event=lambda event, **fields: self.log.info(Event(event), **fields))
        self.telemetry.attach_source(fetcher)
        fetcher.start()
        return fetcher

    def _acquire_instance(self) -> None:
        state_dir = Path(self.config.daemon.state_dir)
        try:
            self.instance.acquire()
        except OSError as exc:
            reason = "it exists and is not a directory" if state_dir.exists() and not state_dir.is_dir() else exc.strerror
            where = f" ({exc.filename})" if exc.filename and exc.filename != str(state_dir) else ""
            raise ConfigError(f"daemon.state_dir: cannot use {state_dir}: {reason}{where}") from None

    def _claim_socket_path(self) -> None:
        """Hold `<socket>.lock` (another state_dir's syncd on the same path then refuses), then check the path."""
        path = ipc_path(self.config.daemon.endpoint)
        if path is None:
            return
        lock = InstanceLock.for_socket(path)
        try:
            lock.acquire()
        except OSError as exc:
            raise ConfigError(f"daemon.endpoint: cannot use {lock.path}: {exc.strerror}") from None
        self.socket_lock = lock
        claim_ipc_path(self.config.daemon.endpoint)

    @property
    def _schema(self) -> str | None:
        """database.schema when set (the default `public` leaves the search_path as the DSN and the role have it)."""
        return None if self.config.database.schema == "public" else self.config.database.schema

    def _database_dsn(self) -> str:
        if self.config.database.dsn:
            return self.config.database.dsn
        self.embedded = EmbeddedPostgres(self.config.daemon.state_dir)
        dsn = self.embedded.start()
        self.log.info(Event.EMBEDDED_DATABASE_READY, pgdata=str(self.embedded.pgdata))
        return dsn

    def _prepare_database(self, dsn: str, lock_dsn: str, confirms: Confirms | None) -> tuple[TradingCalendar, Any]:
        timeout_s = self.config.database.connect_timeout_s
        conn = connection.connect(dsn, timeout_s, TimeZone=self.config.schedule.timezone)
        try:
            check_schema(conn, self._schema)
            if set(migrations.pending(conn)) & UPGRADES_THAT_REWRITE:
                # An index built per year of history (migration 7: seconds a year): more than the unit's start
                # timeout on a long one. systemd waits this much longer, once; the STATUS says why.
                self.notifier.notify(f"EXTEND_TIMEOUT_USEC={MIGRATION_EXTEND_S * 1_000_000}",
                                     "STATUS=migrating the database (an index per year of history)")
            version = migrations.migrate(conn, self.config.database.compat_view, self.config.database.compat_adjust)
            notify_ms = check_lock_session(conn, lock_dsn, timeout_s, lock_dsn_set=bool(self.config.database.lock_dsn))
            self.log.info(Event.LOCK_SESSION_CHECKED, notify_ms=round(notify_ms, 1),
                          lock_dsn=redact_dsn(self.config.database.lock_dsn) if self.config.database.lock_dsn else "database.dsn")
            if Orphans(lock_dsn, timeout_s, self.telemetry.runs_interrupted).recover("start-up") is None:
                self.log.info(Event.RECOVERY_DEFERRED, reason="a live run holds the run lock (here or on another host)")
            zone = zoneinfo.ZoneInfo(self.config.schedule.timezone)
            calendar = TradingCalendar(reference.load_calendar(conn), warn=lambda event, kw: self.log.warning(event, **kw),
                                       confirms=confirms, today=lambda: dt.datetime.now(zone).date())
            newest = runs.history(conn, 1)
            self.log.info(Event.DATABASE_READY, schema_version=version, database=redact_dsn(self.config.database.dsn))
            return calendar, (newest[0] if newest else None)
        finally:
            conn.close()

    def _authenticate_clients(self, context: zmq.Context[Any]) -> None:
        """With daemon.curve_clients_dir, only the clients whose certificates are there get in (control/curve.py)."""
        daemon = self.config.daemon
        if not daemon.curve_secret_key:
            return
        if not daemon.curve_clients_dir:
            self.log.warning(Event.CURVE_OPEN_ACCESS, endpoint=daemon.endpoint,
                             reason="daemon.curve_clients_dir is empty: any client that knows the server's public key "
                                    "gets in; list the allowed clients' certificates there (docs/operations.md)")
            return
        self.client_auth = ClientAuthenticator(context, Path(daemon.curve_clients_dir))
        self.client_auth.start()

    def _bind(self, context: zmq.Context[Any]) -> zmq.Socket[Any]:
        rep = context.socket(zmq.ROUTER)
        rep.setsockopt(zmq.LINGER, 0)
        rep.setsockopt(zmq.MAXMSGSIZE, HARD_FRAME_LIMIT)
        if self.config.daemon.curve_secret_key:
            apply_server_curve(rep, self.config.daemon.curve_public_key, self.config.daemon.curve_secret_key)
        endpoint = self.config.daemon.endpoint
        path = ipc_path(endpoint)
        if path is None:
            rep.bind(endpoint)
            return rep
        mode = self.config.daemon.socket_mode_bits
        old_umask = os.umask(0o777 & ~mode)  # the socket file is born with its final mode: no window
        try:
            rep.bind(endpoint)
        except zmq.ZMQError as exc:
            raise ConfigError(f"daemon.endpoint: cannot bind {endpoint}: {exc}") from None
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)
        self.log.debug(Event.SOCKET_BOUND, path=str(path), mode=oct(stat.S_IMODE(path.stat().st_mode)))
        return rep

    def _install_signals(self) -> None:
        self._wake_w.setblocking(False)
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        # the wake-up fd already woke the loop; it does the work
        if signum == signal.SIGHUP:
            self._hangup = True
        else:
            self._signalled.append(signum)

    def _on_hangup(self) -> None:
        self._hangup = False
        if self.client_auth is not None:
            self.client_auth.reload()
        else:
            self.log.info(Event.SIGNAL_IGNORED, signal="SIGHUP", reason="nothing to reload without daemon.curve_clients_dir")

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except BlockingIOError:
            pass  # already full of wake-ups: the loop will wake anyway

    # --- the loop ----------------------------------------------------------------------------
    def _loop(self, rep: zmq.Socket[Any], ops: Ops, sched: DailySchedule, state: RunState,
              reconciliations: Reconciliations | None = None) -> None:
        poller = zmq.Poller()
        poller.register(rep, zmq.POLLIN)
        wake_fd = self._wake_r.fileno()
        poller.register(wake_fd, zmq.POLLIN)  # raw fds come back from poll() as ints
        watchdog = self.notifier.watchdog_interval_s
        next_ping = 0.0
        last_status = ""
        while not self._signalled:
            events = dict(poller.poll(self._timeout_ms(sched, watchdog)))
            if wake_fd in events:
                self._drain_wake()
            if self._hangup:
                self._on_hangup()
            if rep in events:
                self._serve_waiting(rep, ops)
            if self._deferred:
                self._answer_deferred(rep, ops)
            if reconciliations is not None:
                self._after_run(state, reconciliations)
            sched.run_pending()
            if watchdog and time.monotonic() >= next_ping:
                self.notifier.watchdog()
                next_ping = time.monotonic() + watchdog
            last_status = self._report_status(state, last_status)

    def _timeout_ms(self, sched: DailySchedule, watchdog: float | None) -> int | None:
        waiting = min((d.deadline for _, d in self._deferred), default=None)
        until_deadline = max(0.0, waiting - time.monotonic()) if waiting is not None else None
        candidates = [t for t in (sched.idle_seconds(), watchdog, until_deadline) if t is not None]
        if not candidates:
            return None
        return max(0, int(min(candidates) * 1000) + 1)

    def _serve_waiting(self, rep: zmq.Socket[Any], ops: Ops) -> None:
        """Receive the requests already waiting, up to SERVE_BURST of them, then answer them as one Batch
        (identical reads share one reply: ops.Batch), then let the loop do its chores (signals, the
        schedule, the watchdog): under load a request costs no poll of its own. The requests answered from
        memory go first, so a slow database read delays only the requests that wait on it; a peer's
        requests keep their order (a DEALER may send several). The database reads of the rest leave together, in
        one round trip (batchreads.py)."""
        waiting = []
        for _ in range(SERVE_BURST):
            try:
                waiting.append(split_envelope(rep.recv_multipart(zmq.NOBLOCK)))  # the peer's routing envelope, then the request's parts
            except zmq.Again:
                break
        batch = ops.batch()
        first: list[tuple[list[bytes], list[bytes]]] = []
        then: list[tuple[list[bytes], list[bytes]]] = []
        peers: set[tuple[bytes, ...]] = set()
        for envelope, body in waiting:
            peer = tuple(envelope)
            quick = len(body) == 1 and peer not in peers and batch.from_memory(body[0])
            (first if quick else then).append((envelope, body))
            peers.add(peer)
        for envelope, body in first:
            self._serve_one(rep, batch, envelope, body)
        batch.read_ahead(body[0] for _, body in then if len(body) == 1)
        for envelope, body in then:
            self._serve_one(rep, batch, envelope, body)

    def _serve_one(self, rep: zmq.Socket[Any], batch: Batch, envelope: list[bytes], body: list[bytes]) -> None:
        """Answer one request (or set its reply aside to wait: a Deferred)."""
        if len(body) == 1:
            answer = batch.answer(body[0])
        else:
            reply = ErrorReply(code=ErrorCode.BAD_REQUEST, message=f"request has {len(body)} frames; send one JSON object in one frame")
            self.log.info(Event.REQUEST_REFUSED, code=reply.code, message=reply.message)
            answer = encode(reply)
        if isinstance(answer, Deferred):
            self._deferred.append((envelope, answer))
        else:
            send_reply(rep, envelope, answer)

    def _answer_deferred(self, rep: zmq.Socket[Any], ops: Ops, everything: bool = False) -> None:
        """Send the deferred replies whose wait is over (all of them when `everything`)."""
        now = time.monotonic()
        waiting = []
        for envelope, deferred in self._deferred:
            if everything or now >= deferred.deadline or deferred.ready():
                send_reply(rep, envelope, encode(ops.finish(deferred)))
            else:
                waiting.append((envelope, deferred))
        self._deferred = waiting

    def _after_run(self, state: RunState, reconciliations: Reconciliations) -> None:
        """Hand each newly finished run to reconciliations.after_run once (a scheduled sample may follow it)."""
        last: RunRecord | None = state.snapshot().last
        if last is None or last.run_id == self._last_run_seen:
            return
        self._last_run_seen = last.run_id
        try:
            reconciliations.after_run(last)
        except Exception as exc:  # a sample that cannot be planned (the database away) must not end the loop
            self.log.warning(Event.RECONCILE_REFUSED, run_id=last.run_id, error=str(exc))

    def _drain_wake(self) -> None:
        self._wake_r.setblocking(False)
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    def _report_status(self, state: RunState, last: str) -> str:
        snapshot = state.snapshot()
        run = snapshot.current
        text = "idle" if run is None else (
            f"{snapshot.state} {run.task_type} {run.run_id}: {run.days_done}/{run.trading_days} days, {run.rows} rows")
        if text != last:
            self.notifier.status(text)
        return text

    # --- shutdown ----------------------------------------------------------------------------
    def _shutdown(self, rep: zmq.Socket[Any], ops: Ops, state: RunState, worker: Worker, syncer: Syncer,
                  reconciler: Reconciler) -> None:
        self.notifier.stopping()
        run_id = state.request_cancel()  # first: from here no further day is written
        signum = self._signalled[0] if self._signalled else None
        self.log.info(Event.DAEMON_STOPPING, signal=signal.Signals(signum).name if signum else None, cancelled_run=run_id)
        reconciler.stop(timeout=0)  # its job ends between requests
        self._answer_deferred(rep, ops, everything=True)
        rep.close(linger=0)
        if run_id is not None and not state.wait_finished(SHUTDOWN_GRACE_S):
            self.log.error(Event.WORKER_DID_NOT_STOP, run_id=run_id, waited_s=SHUTDOWN_GRACE_S)
            try:  # record it ourselves; the worker's open transaction dies with the process
                ops.db.call(lambda c: runs.finish_run(c, run_id, "cancelled", "daemon stopped (SIGTERM) before the day in flight finished"))
            except Exception as exc:
                self.log.error(Event.RUN_RECORD_FAILED, run_id=run_id, error=str(exc))
        worker.stop(timeout=0.5)
        reconciler.stop(timeout=SHUTDOWN_GRACE_S / 2)
        ops.db.close()
        syncer.close()
        path = ipc_path(self.config.daemon.endpoint)
        if path is not None:
            Path(path).unlink(missing_ok=True)


def send_reply(rep: zmq.Socket[Any], envelope: list[bytes], reply: bytes) -> None:
    """A reply behind its routing envelope, one send a frame: pyzmq's send_multipart checks every part first,
    2-3x the CPU of these sends (5-8 us a reply, measured), on the loop's path for every request."""
    for frame in envelope:
        rep.send(frame, zmq.SNDMORE)
    rep.send(reply)


def split_envelope(parts: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """A ROUTER's message: (the routing envelope to send the reply back with, the request's frames). A REQ
    peer's envelope ends at the first empty frame; a peer that sends none (a DEALER) has its identity alone."""
    for i in range(1, len(parts)):
        if parts[i] == b"":
            return parts[:i + 1], parts[i + 1:]
    return parts[:1], parts[1:]
