"""Alerts: a webhook POST when something needs a human (`[alert]`, docs/operations.md "Alerts").

Owns which events alert (`alert.on`: a run ended `failed` or `partial`, a run found
`interrupted`, and `late`: the latest completed trading day not synced, judged by poller.py),
the message and its shapes (syncd's JSON, or the chat bots' own: DingTalk and WeCom
`{"msgtype": "text", "text": {"content": ...}}`, Slack `{"text": ...}`), and delivery: one
sender thread owned by the daemon takes alerts from a bounded queue and POSTs each with a
timeout and a bounded number of retries. Whoever raises an alert only enqueues it (never
waits), so a dead or stalling webhook cannot slow a run or the control loop; a POST that
fails for good is logged `alert_failed`. The webhook URL holds the bot's secret: it never
appears in a log line or a reply (only its host does).
"""

from __future__ import annotations

import json
import queue
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence

import msgspec

from ..config import AlertConfig
from ..logs import Event, get_logger
from ..record import RunRecord
from .freshness import Verdict

QUEUE_SIZE = 64            # alerts waiting for the sender; more are dropped (and logged): a flood helps nobody
RETRY_BACKOFF_S = 1.0      # doubles after each failed attempt
STOP_GRACE_S = 2.0         # at shutdown, time left to deliver what is queued
MAX_TEXT_BYTES = 2000      # WeCom cuts text at 2,048 bytes
RESPONSE_LIMIT = 64 * 1024
RUN_EVENTS = ("failed", "partial", "interrupted")


class Alert(msgspec.Struct, kw_only=True):
    """The JSON format's body (`format = "json"`); the chat formats carry `message`."""

    event: str                 # failed | partial | interrupted | late
    run_id: str | None         # null for `late`
    task_type: str | None
    status: str | None         # the run's status; for `late`, the day's
    start_date: str | None
    end_date: str | None
    days_failed: int | None
    message: str
    host: str


class AlertFailed(Exception):
    """A POST that did not deliver; `retry` says whether another attempt may help. The message is URL-free."""

    def __init__(self, message: str, retry: bool) -> None:
        super().__init__(message)
        self.retry = retry


Post = Callable[[bytes], None]  # deliver one body or raise AlertFailed


def run_alert(run: RunRecord, event: str, host: str) -> Alert:
    what = (f"run {run.run_id} ({run.task_type}, {run.start_date}..{run.end_date}) ended {run.status}"
            + (f": {run.error}" if run.error else "") + f"; {run.rows:,} rows written")
    return Alert(event=event, run_id=run.run_id, task_type=run.task_type, status=run.status,
                 start_date=run.start_date.isoformat(), end_date=run.end_date.isoformat(), days_failed=run.days_failed,
                 message=f"syncd on {host}: {what}", host=host)


def late_alert(verdict: Verdict, late_after: str, zone_name: str, host: str) -> Alert:
    day = verdict.completed.unconfirmed[0] if verdict.completed.unconfirmed else verdict.completed.day
    when = day.isoformat() if day else None
    return Alert(event="late", run_id=None, task_type=None, status=verdict.day_status, start_date=when, end_date=when,
                 days_failed=None, host=host,
                 message=f"syncd on {host}: not synced by {late_after} ({zone_name}): {verdict.reason}")


def render(alert: Alert, fmt: str) -> bytes:
    """The POST body in `fmt` (json | dingtalk | wecom | slack)."""
    if fmt == "json":
        return msgspec.json.encode(alert)
    text = _clip(f"[syncd] {alert.event}: {alert.message}")
    if fmt == "slack":
        return msgspec.json.encode({"text": text})
    return msgspec.json.encode({"msgtype": "text", "text": {"content": text}})  # dingtalk and wecom alike


def _clip(text: str) -> str:
    data = text.encode()
    return text if len(data) <= MAX_TEXT_BYTES else data[:MAX_TEXT_BYTES - 3].decode(errors="ignore") + "..."


class Alerter:
    """Raises alerts for the configured events and delivers them on its own thread."""

    def __init__(self, config: AlertConfig, zone_name: str, host: str | None = None, post: Post | None = None) -> None:
        self.config = config
        self.zone_name = zone_name
        self.host = host or socket.gethostname()
        self._post = post or WebhookPost(config.webhook_url, config.format, config.timeout_s)
        self._queue: queue.Queue[Alert | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._raised: set[tuple[str, str]] = set()  # (run_id, event): at most one alert each
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="syncd-alerts", daemon=True)
        self._log = get_logger()
        self.webhook_host = urllib.parse.urlsplit(config.webhook_url).hostname or "?"

    @property
    def wants_late(self) -> bool:
        return "late" in self.config.on

    # --- raising (any thread; never waits) --------------------------------------------------
    def run_finished(self, run: RunRecord) -> None:
        if run.status in RUN_EVENTS:
            self._raise_for_run(run, run.status)

    def runs_interrupted(self, runs: Sequence[RunRecord]) -> None:
        for run in runs:
            self._raise_for_run(run, "interrupted")

    def late(self, verdict: Verdict) -> None:
        if self.wants_late:
            self._enqueue(late_alert(verdict, self.config.late_after, self.zone_name, self.host))

    def _raise_for_run(self, run: RunRecord, event: str) -> None:
        if event not in self.config.on:
            return
        with self._lock:
            if (run.run_id, event) in self._raised:
                return
            self._raised.add((run.run_id, event))
        self._enqueue(run_alert(run, event, self.host))

    def _enqueue(self, alert: Alert) -> None:
        try:
            self._queue.put_nowait(alert)
        except queue.Full:
            self._log.error(Event.ALERT_FAILED, alert=alert.event, run_id=alert.run_id, webhook_host=self.webhook_host,
                            error=f"{QUEUE_SIZE} alerts already wait for the webhook; this one is dropped")

    # --- delivering (the sender thread) ----------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Deliver what is queued within `grace_s`, then leave (the thread is a daemon: a stalled POST dies with us)."""
        self._stopping.set()
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(None, timeout=grace_s)
        except queue.Full:
            return
        self._thread.join(grace_s)

    def _loop(self) -> None:
        while (alert := self._queue.get()) is not None:
            self._deliver(alert)

    def _deliver(self, alert: Alert) -> None:
        body = render(alert, self.config.format)
        attempts = self.config.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                self._post(body)
            except AlertFailed as exc:
                last_try = attempt == attempts or not exc.retry or self._stopping.is_set()
                if last_try or self._stopping.wait(RETRY_BACKOFF_S * 2 ** (attempt - 1)):
                    self._log.error(Event.ALERT_FAILED, alert=alert.event, run_id=alert.run_id, attempts=attempt,
                                    webhook_host=self.webhook_host, error=str(exc))
                    return
                continue
            except Exception as exc:  # the sender thread must outlive any surprise
                self._log.error(Event.ALERT_FAILED, alert=alert.event, run_id=alert.run_id, attempts=attempt,
                                webhook_host=self.webhook_host, error=f"{type(exc).__name__}")
                return
            self._log.info(Event.ALERT_SENT, alert=alert.event, run_id=alert.run_id, attempts=attempt,
                           webhook_host=self.webhook_host)
            return


class WebhookPost:
    """POST a JSON body to the webhook (urllib: no extra dependency; honours HTTPS_PROXY)."""

    def __init__(self, url: str, fmt: str, timeout_s: float) -> None:
        self._url = url
        self._fmt = fmt
        self._timeout_s = timeout_s

    def __call__(self, body: bytes) -> None:
        request = urllib.request.Request(self._url, data=body, method="POST",
                                         headers={"Content-Type": "application/json; charset=utf-8",
                                                  "User-Agent": "syncd-alerts"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                reply = response.read(RESPONSE_LIMIT)
        except urllib.error.HTTPError as exc:
            # 4xx: the URL or the body is wrong, and will be next time too (429 excepted)
            raise AlertFailed(f"HTTP {exc.code} {exc.reason}", retry=exc.code >= 500 or exc.code == 429) from None
        except urllib.error.URLError as exc:
            raise AlertFailed(self._scrub(f"cannot reach the webhook: {exc.reason}"), retry=True) from None
        except TimeoutError:
            raise AlertFailed(f"no answer within {self._timeout_s:g} s", retry=True) from None
        except OSError as exc:
            raise AlertFailed(self._scrub(f"{type(exc).__name__}: {exc.strerror or exc}"), retry=True) from None
        if self._fmt in ("dingtalk", "wecom"):
            self._check_bot_reply(reply)

    def _check_bot_reply(self, reply: bytes) -> None:
        """DingTalk and WeCom answer HTTP 200 with `errcode` != 0 for a refused message (keyword, rate limit)."""
        try:
            answer = json.loads(reply or b"{}")
        except ValueError:
            return
        if isinstance(answer, dict) and answer.get("errcode", 0) != 0:
            message = str(answer.get("errmsg", ""))[:200]
            raise AlertFailed(self._scrub(f"the bot refused the message: errcode {answer['errcode']} {message}"),
                              retry=False)

    def _scrub(self, text: str) -> str:
        """Anything an error quotes of the URL goes; the query (the token) and path first."""
        parts = urllib.parse.urlsplit(self._url)
        for secret in (self._url, parts.query, parts.path):
            if secret and len(secret) > 1:
                text = text.replace(secret, "***")
        return re.sub(r"(?i)(access_token|key|token)=[^&\s]+", r"\1=***", text)
