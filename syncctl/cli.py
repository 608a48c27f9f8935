"""syncctl: the command line for syncd (its flags and exit codes are documented in README.md, "The CLI").

Owns argument parsing, human output (rich tables and a live progress bar), `--json` output
of the daemon's replies as they came, and the exit codes: 0 ok, 1 daemon unreachable or
timed out, 2 bad input, 3 rejected (busy), 4 `--wait` ended other than succeeded, 5 `verify`
found anomalies or a failed or incomplete day, or `check` found the data stale or the last
scheduled run failed. It talks
to syncd only through SyncClient and never syncs anything itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from syncd.config import DEFAULT_CONFIG_NAME, ConfigError, ipc_path, load_config, resolve_endpoint
from syncd.protocol import Day, Days, History, Ok, Reconciliation, Run, Task, VerifiedDay, Verify, VerifyReply, parse_date

from .client import SyncClient, SyncdBusy, SyncdError, SyncdRequestError, SyncdUnreachable

EXIT_OK, EXIT_UNREACHABLE, EXIT_BAD_INPUT, EXIT_BUSY, EXIT_RUN_NOT_SUCCEEDED = 0, 1, 2, 3, 4
EXIT_ANOMALIES = 5  # verify: anomalies, or a failed or incomplete day
EXIT_CHECK_UNHEALTHY = 5  # `check`: the data is stale or the last scheduled run failed
STATUS_STYLE = {"succeeded": "green", "success": "green", "partial": "yellow", "failed": "red", "cancelled": "magenta",
                "interrupted": "red", "running": "cyan", "syncing": "cyan", "pending": "dim", "skipped": "dim",
                "incomplete": "yellow"}
WIDE_PROGRESS = 110  # columns: from here the progress bar also shows the run id and the day in flight
SYSTEMD_SOCKET = Path("/run/syncd/syncd.sock")  # where systemd/config.production.toml puts it
DATE_HELP = "YYYY-MM-DD, e.g. 2025-10-09 (no other spelling: not 20251009, not 2025-W41-4)"
RANGE_EPILOG = ("--from and --to are calendar days, both included; the daemon syncs the trading days among them "
                "(weekends and exchange holidays are recorded as skipped). Dates are YYYY-MM-DD only.")


class RunEnded(Ok, kw_only=True):
    """`start --wait --json`'s second JSON line: the run as it was recorded when it ended."""

    run: Run


def _date_arg(value: str) -> dt.date:
    try:
        return parse_date(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits 2 on bad input: exactly our code
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="syncctl", description="Control syncd: start, watch and inspect syncs.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", metavar="PATH", help="read daemon.endpoint from this config.toml")
    where.add_argument("--endpoint", metavar="URI", help="syncd's endpoint (default: $SYNCD_ENDPOINT, else ./config.toml's)")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds to wait for each reply (default 5)")
    parser.add_argument("--server-key", metavar="KEY", help="syncd's CURVE public key for a tcp:// endpoint ($SYNCD_SERVER_KEY)")
    parser.add_argument("--client-key", metavar="FILE",
                        help="this client's certificate (NAME.key_secret from `python -m syncd.security keygen --client "
                             "NAME`) for a daemon that admits only listed clients ($SYNCD_CLIENT_KEY)")
    parser.add_argument("--json", action="store_true", help="print the daemon's replies as JSON")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    json_flag = _Parser(add_help=False)
    json_flag.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the daemon's replies as JSON")
    start = sub.add_parser("start", parents=[json_flag], help="start a sync of a date range",
                           description="Start a sync of the calendar days --from..--to (both included).",
                           epilog=RANGE_EPILOG + " Example: syncctl start --from 2025-10-09 --to 2025-10-17 --wait. "
                           "With --wait --json: JSON lines, the start reply then {\"status\":\"ok\",\"run\":{...}}.")
    start.add_argument("--from", dest="start_date", type=_date_arg, required=True, metavar="D",
                       help=f"first day to sync: {DATE_HELP}")
    start.add_argument("--to", dest="end_date", type=_date_arg, required=True, metavar="D",
                       help="last day to sync, included: YYYY-MM-DD (the same day as --from syncs one day)")
    start.add_argument("--wait", action="store_true",
                       help="follow the run with a progress bar until it ends; exit 4 unless it succeeded")
    start.add_argument("--task-type", default="manual", help=argparse.SUPPRESS)
    sub.add_parser("status", parents=[json_flag], help="the current run, the last run and the schedule")
    cancel = sub.add_parser("cancel", parents=[json_flag], help="cancel the current run")
    cancel.add_argument("--run-id", help="only if this is the current run")
    history = sub.add_parser("history", parents=[json_flag], help="recent runs, newest first")
    history.add_argument("--limit", type=int, default=20, metavar="N")
    days = sub.add_parser("days", parents=[json_flag], help="each day's sync status in a range", epilog=RANGE_EPILOG)
    days.add_argument("--from", dest="start_date", type=_date_arg, required=True, metavar="D",
                      help=f"first day: {DATE_HELP}")
    days.add_argument("--to", dest="end_date", type=_date_arg, required=True, metavar="D",
                      help="last day, included: YYYY-MM-DD")
    verify = sub.add_parser("verify", parents=[json_flag], help="each day's coverage and anomalies; exit 5 if any",
                            epilog=RANGE_EPILOG)
    verify.add_argument("--from", dest="start_date", type=_date_arg, required=True, metavar="D",
                        help=f"first day: {DATE_HELP}")
    verify.add_argument("--to", dest="end_date", type=_date_arg, required=True, metavar="D",
                        help="last day, included: YYYY-MM-DD")
    verify.add_argument("--against", metavar="SOURCE",
                        help="first compare the stored days with this source (demo, csv, akshare, baostock, tushare; "
                             "its [source.NAME] table): prices to the cent, volume and amount, presence, factor steps; "
                             "the request count is printed before anything is fetched")
    verify.add_argument("--plan", action="store_true",
                        help="with --against: print the request plan only (nothing fetched)")
    sub.add_parser("ping", parents=[json_flag], help="check that syncd answers")
    sub.add_parser("check", parents=[json_flag],
                   help="is the data fresh? one line; exit 0 healthy, 5 not (stale day or failed scheduled run), 1 unreachable")
    return parser


def find_endpoint(args: argparse.Namespace) -> str:
    if args.endpoint:
        return resolve_endpoint(args.endpoint, _cwd())
    if args.config:
        return load_config(args.config).daemon.endpoint
    if os.environ.get("SYNCD_ENDPOINT"):
        return resolve_endpoint(os.environ["SYNCD_ENDPOINT"], _cwd())
    return load_config(None).daemon.endpoint


def endpoint_origin(args: argparse.Namespace) -> str:
    """Where find_endpoint took the endpoint from, in the words of the flags."""
    if args.endpoint:
        return "--endpoint"
    if os.environ.get("SYNCD_ENDPOINT"):
        return "$SYNCD_ENDPOINT"
    if args.config:
        return f"--config {args.config}"
    if Path(DEFAULT_CONFIG_NAME).is_file():
        return f"./{DEFAULT_CONFIG_NAME}"
    return f"the default (no ./{DEFAULT_CONFIG_NAME} in {Path.cwd()})"


def missing_socket_hint(endpoint: str, origin: str) -> list[str] | None:
    """Lines saying why syncctl cannot reach the ipc socket file of `endpoint` and how to point it at
    syncd, when the file does not exist or this user may not open it (no daemon can answer there, so
    there is nothing to wait for); None when it may be reached (or is not a file: tcp://, abstract)."""
    path = ipc_path(endpoint)
    if path is None:
        return None
    try:
        path.stat()
    except PermissionError:
        return [f"syncctl: no permission to reach {path} (endpoint {endpoint}, from {origin}): "
                "join the socket's group (syncd for a systemd install, docs/operations.md)"]
    except OSError:
        lines = [f"syncctl: no syncd socket at {path} (endpoint {endpoint}, from {origin})",
                 "  point syncctl at the daemon with one of:",
                 "    --config PATH/config.toml     the daemon's config (its daemon.endpoint)",
                 "    --endpoint ipc:///PATH/syncd.sock   or tcp://HOST:PORT",
                 "    export SYNCD_ENDPOINT=ipc:///PATH/syncd.sock",
                 f"  a systemd install listens on ipc://{SYSTEMD_SOCKET}"]
        if os.access(SYSTEMD_SOCKET, os.F_OK):
            lines.append(f"  (that socket exists here: syncctl --endpoint ipc://{SYSTEMD_SOCKET} ...)")
        return lines
    if not os.access(path, os.R_OK | os.W_OK):
        return [f"syncctl: no permission to open {path} (endpoint {endpoint}, from {origin}): "
                "join the socket's group (syncd for a systemd install, docs/operations.md)"]
    return None


def _cwd() -> Path:
    return Path.cwd()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # piped output is for grep and awk: wide rows instead of wrapped, truncated cells. No automatic
    # highlighting: rich's highlighter would colour the digits inside run ids and dates as separate numbers.
    out = Console(highlight=False) if sys.stdout.isatty() else Console(width=250, highlight=False)
    err = Console(stderr=True, highlight=False) if sys.stderr.isatty() else Console(stderr=True, width=250, highlight=False)
    if args.command == "history" and not 1 <= args.limit <= 1000:
        err.print("syncctl: --limit must be between 1 and 1000")
        return EXIT_BAD_INPUT
    if args.timeout <= 0:
        err.print("syncctl: --timeout must be positive")
        return EXIT_BAD_INPUT
    try:
        endpoint = find_endpoint(args)
        hint = missing_socket_hint(endpoint, endpoint_origin(args))
        if hint is not None:
            for line in hint:
                err.print(line, markup=False)
            return EXIT_UNREACHABLE
        client = SyncClient(endpoint, timeout=args.timeout, server_public_key=args.server_key,
                            client_key_file=args.client_key)
        return COMMANDS[args.command](client, args, out)
    except ValueError as exc:  # a malformed --server-key, an empty endpoint
        err.print(f"syncctl: {exc}", markup=False, highlight=False)
        return EXIT_BAD_INPUT
    except ConfigError as exc:
        err.print(f"syncctl: {exc}", markup=False, highlight=False)
        return EXIT_BAD_INPUT
    except SyncdUnreachable as exc:
        err.print(f"syncctl: {exc}", markup=False, highlight=False)
        err.print("  is syncd started? (syncd --config config.toml, or systemctl status syncd)", style="dim")
        return EXIT_UNREACHABLE
    except SyncdBusy as exc:
        if args.json:
            print(msgspec.json.encode(exc.reply).decode())
        else:
            _print_busy(err, exc)
        return EXIT_BUSY
    except SyncdRequestError as exc:
        if args.json and exc.reply:
            print(msgspec.json.encode(exc.reply).decode())
        else:
            err.print(f"syncctl: {exc.message}", markup=False, highlight=False)  # the code: --json and the exit status
        return EXIT_BAD_INPUT
    except SyncdError as exc:
        err.print(f"syncctl: {exc}", markup=False, highlight=False)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        err.print("syncctl: interrupted (the run, if any, goes on in syncd; `syncctl cancel` stops it)")
        return 130
    except BrokenPipeError:  # `syncctl ... | head`: the reader left; die quietly as SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _emit_json(reply: Any) -> None:
    print(msgspec.json.encode(reply).decode(), flush=True)


def cmd_ping(client: SyncClient, args: argparse.Namespace, out: Console) -> int:
    reply = client.ping()
    if args.json:
        _emit_json(reply)
    else:
        out.print(f"syncd {reply.version} is running at {client.endpoint} (pid {reply.pid}, up {_duration(reply.uptime_s)})")
    return EXIT_OK


def cmd_start(client: SyncClient, args: argparse.Namespace, out: Console) -> int:
    reply = client.start(args.start_date, args.end_date, task_type=args.task_type, requested_by=_who())
    if args.json:
        _emit_json(reply)
    else:
        out.print(f"started run [bold]{reply.run_id}[/] ({reply.task.start_date}..{reply.task.end_date}, "
                  f"{reply.task.total_days} calendar days)")
    if not args.wait:
        return EXIT_OK
    run = _follow(client, reply.task, out, live=not args.json and out.is_terminal)
    if args.json:
        _emit_json(RunEnded(run=run))
    else:
        _print_run_summary(out, run)
    return EXIT_OK if run.status == "succeeded" else EXIT_RUN_NOT_SUCCEEDED


def _follow(client: SyncClient, task: Task, out: Console, live: bool) -> Run:
    """Poll status until our run is no longer current; return its record."""
    with Progress(*progress_columns(out.width), console=out, disable=not live, transient=False) as progress:
        bar = progress.add_task(task.run_id, total=None, rows=0, day="", eta=_eta_text(task))
        while True:
            status = client.status()
            current = status.current_task
            if current is None or current.run_id != task.run_id:
                break
            progress.update(bar, total=current.trading_days or None, completed=current.days_done,
                            rows=current.rows, day=(current.current_date or "") + _asking(current), eta=_eta_text(current))
            time.sleep(0.5)  # a UI refresh interval, not a synchronisation
        last = status.last_run
        if last is not None and last.run_id == task.run_id:
            progress.update(bar, total=last.trading_days or 1, completed=last.days_done, rows=last.rows, day="",
                            eta=last.status)
            return last
    for run in client.history(limit=50):
        if run.run_id == task.run_id:
            return run
    raise SyncdRequestError("lost_run", f"run {task.run_id} is no longer current and not in history", {})


def _asking(task: Task) -> str:
    return f" (asking fallback {task.fallback_source})" if task.fallback_source else ""


def progress_columns(width: int) -> list[ProgressColumn]:
    """The bar's columns for a terminal `width` wide: the bar shrinks (down to 8), the counts and the times
    never do; below WIDE_PROGRESS columns the run id (printed just above) and the current day are left out."""
    def kept() -> Column:
        return Column(no_wrap=True)

    columns: list[ProgressColumn] = [
        BarColumn(table_column=Column(min_width=8)), MofNCompleteColumn(table_column=kept()), TextColumn("days", table_column=kept()),
        TextColumn("{task.fields[rows]:,} rows", table_column=kept()), TimeElapsedColumn(table_column=kept()),
        TextColumn("{task.fields[eta]}", table_column=kept())]
    if width >= WIDE_PROGRESS:
        columns.insert(0, TextColumn("[bold]{task.description}", table_column=kept()))
        columns.insert(-2, TextColumn("{task.fields[day]}", table_column=kept()))
    return columns


def _eta_text(task: Task) -> str:
    """The daemon's own estimate (it knows the days left); rich's rate estimate needs many updates and
    shows -:--:-- on a short run."""
    if task.eta_s is not None:
        return f"ETA {_duration(task.eta_s)}"
    return "ETA after the first day" if task.trading_days else "planning"


def cmd_status(client: SyncClient, args: argparse.Namespace, out: Console) -> int:
    reply = client.status()
    if args.json:
        _emit_json(reply)
        return EXIT_OK
    daemon = reply.daemon
    out.print(f"syncd {daemon.version} at {daemon.endpoint} — pid {daemon.pid}, up {_duration(daemon.uptime_s)}, "
              f"source {daemon.source}, database {daemon.database}", markup=False)
    task = reply.current_task
    if task is None:
        out.print("state: [green]idle[/]")
    else:
        eta = f", ETA {_duration(task.eta_s)}" if task.eta_s is not None else ""
        out.print(f"state: [cyan]{reply.state}[/] — {task.task_type} run [bold]{task.run_id}[/] "
                  f"{task.start_date}..{task.end_date}: {task.days_done}/{task.trading_days} trading days "
                  f"({task.progress:.0%}), {task.days_failed} failed, {task.rows:,} rows, at {task.current_date or '-'}"
                  f"{_asking(task)}{eta}; started {format_time(task.start_time)}")
    if reply.last_run is not None:
        run = reply.last_run
        out.print(f"last run: {run.run_id} {run.task_type} [{STATUS_STYLE.get(run.status, '')}]{run.status}[/] "
                  f"{run.start_date}..{run.end_date}, {run.rows:,} rows, started {format_time(run.started_at)}, "
                  f"finished {format_time(run.finished_at)}")
        if run.error:
            out.print(f"  why: {run.error}", markup=False)
    for job in reply.schedule:
        out.print(f"schedule: {job.job} next at {format_time(job.next_run)}")
    return EXIT_OK


def cmd_cancel(client: SyncClient, args: argparse.Namespace, out: Console) -> int:
    reply = client.cancel(args.run_id)
    if args.json:
        _emit_json(reply)
    else:
        out.print(f"cancelling run {reply.run_id} (it stops after the day in flight)")
    return EXIT_OK


def cmd_history(client: SyncClient, args: argparse.Namespace, out: Console) -> int:
    reply = client.call(History(limit=args.limit))
    if args.json:
        _emit_json(reply)
        return EXIT_OK
    offset = shared_offset([time for run in reply.runs for time in (run.started_at, run.finished_at)])
    zone = f" ({offset})" if offset else ""
    table = Table("run", "type", "status", "range", "days", "failed", "rows", f"started{zone}", f"finished{zone}", "error")
    for run in reply.runs:
        table.add_row(run.run_id, run.task_type, f"[{STATUS_STYLE.get(run.status, '')}]{run.status}[/]",
                      f"{run.start_date}..{run.end_date}", f"{run.days_done}/{run.trading_days}", str(run.days_failed),
                      f"{run.rows:,}", format_time(run.started_at, offset), format_time(run.finished_at, offset),
                      Text(run.error or ""))
    out.print(table)
    return EXIT_OK


def cmd_days(client: SyncClient, args: argparse.Namespace, out: Console) -> int:
    reply = client.call(Days(start_date=args.start_date, end_date=args.end_date))
    if args.json:
        _emit_json(reply)
        return EXIT_OK
    table = Table("date", "weekday", "status", "rows", "source", "run", "why")
    for day in reply.days:
        weekday = dt.date.fromisoformat(day.date).strftime("%a")
        table.add_row(day.date, weekday, f"[{STATUS_STYLE.get(day.status, '')}]{day.status}[/]", f"{day.rows:,}",
                      _source(day), day.run_id or "", Text(day.error or day.reason or ""))
    out.print(table)
    return EXIT_OK


def cmd_verify(client: SyncClient, args: argparse.Namespace, out: Console) -> int:
    if args.against is not None:
        return _reconcile(client, args, out)
    if args.plan:
        print("syncctl: --plan goes with --against SOURCE", file=sys.stderr)
        return EXIT_BAD_INPUT
    reply = _verified(client, Verify(start_date=args.start_date, end_date=args.end_date))
    if args.json:
        _emit_json(reply)
    else:
        _print_verified(out, reply.days, f"{args.start_date}..{args.end_date}")
    return EXIT_ANOMALIES if any(_needs_attention(day) for day in reply.days) else EXIT_OK


def _reconcile(client: SyncClient, args: argparse.Namespace, out: Console) -> int:
    """verify --against: the plan printed first (its request count), then the reconciliation followed to its end."""
    planned = client.reconcile(args.start_date, args.end_date, args.against, plan_only=True)
    assert planned.reconciliation is not None
    if args.plan:
        if args.json:
            _emit_json(planned)
        else:
            out.print(_plan_line(planned.reconciliation), markup=False)
        return EXIT_OK
    if not args.json:
        out.print(_plan_line(planned.reconciliation), markup=False)
    live = not args.json and out.is_terminal
    with Progress(TextColumn("[bold]against {task.fields[against]}"), BarColumn(), MofNCompleteColumn(), TextColumn("days"),
                  TextColumn("{task.fields[requests]} requests"), TimeElapsedColumn(), console=out, disable=not live,
                  transient=True) as progress:
        bar = progress.add_task("reconcile", total=planned.reconciliation.days or None, against=args.against, requests=0)

        def show(reply: VerifyReply) -> None:
            if reply.reconciliation is not None:
                progress.update(bar, completed=reply.reconciliation.days_done, requests=reply.reconciliation.requests)

        reply = client.reconcile(args.start_date, args.end_date, args.against, progress=show)
    item = reply.reconciliation
    if args.json:
        _emit_json(reply)
    else:
        _print_verified(out, reply.days, f"{args.start_date}..{args.end_date}")
        if item is not None:
            _print_reconciliation(out, item)
    attention = any(_needs_attention(day) for day in reply.days)
    return EXIT_ANOMALIES if attention or item is None or item.findings or item.state != "done" else EXIT_OK


def _plan_line(item: Reconciliation) -> str:
    stocks = "every stock" if item.stocks is None else f"{item.stocks} stocks"
    return (f"reconciling {item.start_date}..{item.end_date} against {item.against}: {item.planned_requests} requests "
            f"planned ({item.plan}: {item.cost}); {item.days} stored days, {stocks}")


def _print_reconciliation(out: Console, item: Reconciliation) -> None:
    checks = ", ".join(f"{n} {check}" for check, n in sorted(item.by_check.items()))
    out.print(f"against {item.against}: {item.state}, {item.requests} requests made ({item.planned_requests} planned), "
              f"{item.days_done} of {item.days} days compared, {item.findings} findings" + (f" ({checks})" if checks else ""),
              markup=False)
    for error in item.errors:
        out.print(f"  not compared: {error}", markup=False)
    if item.error:
        out.print(f"  the reconciliation ended early: {item.error}", markup=False)


def _verified(client: SyncClient, request: Verify) -> VerifyReply:
    """Ask until every day is checked (days written by an earlier version are checked a batch per request)."""
    reply: VerifyReply = client.call(request)
    left = sum(not day.checked for day in reply.days)
    while left:
        reply = client.call(request)
        now = sum(not day.checked for day in reply.days)
        if now >= left:  # no progress (a run is writing those days): report them as they are
            break
        left = now
    return reply


def _source(day: Day | VerifiedDay) -> str:
    """Who wrote the day: its source, and how many of its stocks came from a fallback ("" when unknown or never written)."""
    if day.source is None:
        return ""
    return f"{day.source} ({day.fallback_stocks:,} from fallback)" if day.fallback_stocks else day.source


def _needs_attention(day: VerifiedDay) -> bool:
    return day.anomalies > 0 or day.status in ("failed", "incomplete")


def _print_verified(out: Console, days: list[VerifiedDay], span: str) -> None:
    trading = [day for day in days if day.status != "skipped"]
    if not trading:
        out.print(f"no trading day in {span} (weekends and exchange holidays): nothing to verify")
        return
    table = Table("date", "status", "rows", "expected", "missing", "source", "anomalies", "first findings")
    for day in days:
        if day.status == "skipped":
            continue
        anomalies = str(day.anomalies) if day.checked else "not checked yet"
        findings = "; ".join(f"{f.stock} {f.check}: {f.detail}" for f in day.findings)
        table.add_row(day.date, f"[{STATUS_STYLE.get(day.status, '')}]{day.status}[/]", f"{day.rows:,}",
                      "-" if day.expected is None else f"{day.expected:,}", str(day.missing), _source(day),
                      f"[red]{anomalies}[/]" if day.anomalies else anomalies, Text(findings))
    out.print(table)
    attention = [day for day in days if _needs_attention(day)]
    unsynced = sum(day.status in ("pending", "syncing") for day in trading)
    verdict = [f"{len(attention)} day(s) need attention"] if attention else []
    verdict += [f"{unsynced} trading day{'s' if unsynced != 1 else ''} not synced yet"] if unsynced else []
    out.print("; ".join(verdict) or "every day is complete and passed the checks")


def cmd_check(client: SyncClient, args: argparse.Namespace, out: Console) -> int:
    """One line for cron and monitors; the exit code is the verdict."""
    reply = client.check()
    if args.json:
        _emit_json(reply)
    else:
        print(f"{'healthy' if reply.healthy else 'unhealthy'}: {reply.reason}", flush=True)
    return EXIT_OK if reply.healthy else EXIT_CHECK_UNHEALTHY


COMMANDS = {"check": cmd_check, "ping": cmd_ping, "start": cmd_start, "status": cmd_status, "cancel": cmd_cancel,
            "history": cmd_history, "days": cmd_days, "verify": cmd_verify}


def _print_busy(err: Console, exc: SyncdBusy) -> None:
    task = exc.current_task
    err.print("syncctl: rejected — a sync is already running; try again when it has finished", style="yellow")
    where = f"  on {task.host} pid {task.pid}" if task.host else ""
    err.print(f"  run {task.run_id}  type {task.task_type}  range {task.start_date}..{task.end_date}  "
              f"started {format_time(task.start_time)}  progress {task.days_done}/{task.trading_days} days{where}",
              markup=False, highlight=False)


def _print_run_summary(out: Console, run: Run) -> None:
    line = Text(f"run {run.run_id} ").append(run.status, style=STATUS_STYLE.get(run.status, ""))
    line.append(f": {_days_written(run)}, {run.rows:,} rows" + (f" — {run.error}" if run.error else ""))
    out.print(line)


def _days_written(run: Run) -> str:
    """"0 of 2 trading days written, 2 failed": what a run left, not how far it got (days_done counts failed days)."""
    written = f"{run.days_done - run.days_failed} of {run.trading_days} trading days written"
    return written + (f", {run.days_failed} failed" if run.days_failed else "")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes else f"{secs}s")


def format_time(value: str | None, known_offset: str | None = None) -> str:
    """A wire time as syncctl shows every time: `2025-10-18 16:00:05 +08:00`, in the zone the daemon sent
    (its schedule.timezone, the zone of run ids), labelled with the UTC offset. `known_offset` is dropped
    from the label when a table header already carries it."""
    if not value:
        return "-"
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return value
    clock = moment.strftime("%Y-%m-%d %H:%M:%S")
    offset = _offset(moment)
    return clock if offset is None or offset == known_offset else f"{clock} {offset}"


def shared_offset(values: list[str | None]) -> str | None:
    """The UTC offset all these wire times share (a table header's zone label), or None."""
    try:
        offsets = {_offset(dt.datetime.fromisoformat(value)) for value in values if value}
    except ValueError:
        return None
    return offsets.pop() if len(offsets) == 1 else None


def _offset(moment: dt.datetime) -> str | None:
    delta = moment.utcoffset()
    if delta is None:
        return None
    minutes = int(delta.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _who() -> str:
    try:
        return f"syncctl:{os.getlogin()}"
    except OSError:
        return f"syncctl:uid{os.getuid()}"


if __name__ == "__main__":
    sys.exit(main())
