"""config.toml as typed, validated msgspec Structs, and how it is found and resolved.

This module owns the config contract (docs/configuration.md): key names, defaults, value
checks, relative-path resolution against the config file's folder, and the SYNCD_DSN /
SYNCD_ENDPOINT environment overrides. A bad key or value raises ConfigError whose message
names the key's path and what was expected. It must not import psycopg or any source
library: syncctl loads config to find the endpoint.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, get_args

import msgspec
import msgspec.inspect

DEFAULT_CONFIG_NAME = "config.toml"
IPC_PATH_MAX = 107  # sun_path limit for ipc:// endpoints
_SCHEMA = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")


class ConfigError(Exception):
    """The config file is missing, unreadable, or has a bad key or value."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class DaemonConfig(_Section):
    endpoint: str = "ipc://var/syncd.sock"
    state_dir: str = "var"
    socket_mode: str = "0660"
    curve_public_key: str = ""   # Z85; required for a tcp:// endpoint that is not loopback
    curve_secret_key: str = ""
    curve_clients_dir: str = ""  # tcp + CURVE: only clients whose certificate is here get in (empty: any key)

    def __post_init__(self) -> None:
        if self.curve_clients_dir and not self.curve_secret_key:
            raise ValueError("daemon.curve_clients_dir: needs CURVE (set daemon.curve_public_key and daemon.curve_secret_key)")
        if not re.fullmatch(r"0?[0-7]{3}", self.socket_mode):
            raise ValueError(f"daemon.socket_mode: expected octal permission bits like \"0660\", got {self.socket_mode!r}")
        if not self.endpoint.startswith(("ipc://", "tcp://")):
            raise ValueError(f"daemon.endpoint: expected ipc://PATH or tcp://HOST:PORT, got {self.endpoint!r}")

    @property
    def socket_mode_bits(self) -> int:
        return int(self.socket_mode, 8)


class DatabaseConfig(_Section):
    dsn: str = ""
    lock_dsn: str = ""  # a direct (unpooled) connection for the run lock alone; empty: dsn (docs/operations.md)
    compat_view: bool = False
    compat_adjust: Literal["none", "qfq"] = "none"  # the prices daily_stock_data shows (docs/data.md)
    connect_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    compact_closed_years: bool = True  # the idle worker rewrites closed years stored by stock (db/compaction.py)
    schema: str = "public"  # where every table, view and the migrations record live (docs/operations.md, "Database privileges")

    def __post_init__(self) -> None:
        if not _SCHEMA.fullmatch(self.schema) or self.schema.startswith("pg_"):
            raise ValueError(f"database.schema: expected a lower-case PostgreSQL name (a-z, 0-9, _; at most 63 "
                             f"characters; not pg_...), got {self.schema!r}")


class DemoConfig(_Section):
    """[source.demo]: the synthetic market, and fault injection for tests and drills.

    `fail_dates`: fetching these days fails (the day is reported failed, the run goes on).
    `timeout_dates`: fetching these days raises TimeoutError naming the date after
    `day_delay_s`, as a source library's request timeout does (the whole window fails and
    is retried). `fail_times`: 0 means the listed days always fail; N > 0 means each listed
    day fails only its first N fetches in this daemon process, then succeeds (a flaky upstream).
    """

    stocks: Annotated[int, msgspec.Meta(ge=1, le=20000)] = 5300
    seed: int = 1
    day_delay_s: Annotated[float, msgspec.Meta(ge=0)] = 0.0   # simulated upstream latency per day fetched
    fail_dates: list[str] = []                                 # these days' fetches fail
    timeout_dates: list[str] = []                              # these days' fetches raise TimeoutError
    fail_times: Annotated[int, msgspec.Meta(ge=0)] = 0         # 0: always; N: only the first N fetches of each day
    corporate_actions: bool = True                             # deterministic ex-dividend / bonus-share days

    def __post_init__(self) -> None:
        for key in ("fail_dates", "timeout_dates"):
            for value in getattr(self, key):
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                    raise ValueError(f"source.demo.{key}: expected YYYY-MM-DD dates, got {value!r}")


class CsvConfig(_Section):
    path: str = "data"
    encoding: Literal["utf-8", "gbk", "gb18030"] = "utf-8"  # files from Chinese Excel/TDX are gbk; a UTF-8 BOM is tolerated


class AkshareConfig(_Section):
    """[source.akshare]: Eastmoney and Sina through akshare (docs/sources.md). Polite by default:
    Eastmoney bans bulk scrapers, so one thread, about one request a second with jitter."""

    concurrency: Annotated[int, msgspec.Meta(ge=1, le=8)] = 1               # threads (each its own child process)
    requests_per_second: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=5)] = 0.5                # up to +50% on each gap, at random
    window_days: Annotated[int, msgspec.Meta(ge=1, le=366)] = 60            # unused: each stock is asked once a run
    adjust: Literal["", "qfq", "hfq"] = ""                                  # ignored (logged): prices are stored raw
    request_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 20.0          # one HTTP request
    call_deadline_s: Annotated[float, msgspec.Meta(gt=0)] = 60.0            # one library call (x5 for paged ones)
    request_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2          # extra attempts per request
    request_retry_backoff_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0     # doubles each retry
    ban_pause_s: Annotated[float, msgspec.Meta(ge=0)] = 60.0                # pause after HTTP 403/429/456 or an empty body
    ban_pause_max_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0           # doubling for each ban in a row, up to this
    give_up_after: Annotated[int, msgspec.Meta(ge=1)] = 5                  # stocks failed in a row before the rest is not asked
    snapshot_today: bool = True   # today, after the close, on a confirmed trading day: one stock_zh_a_spot_em
    factors: bool = True          # Sina's hfq factor series, one request per stock: adj_factor and exact pre_close
    relay: str = ""               # send every HTTP request to RELAY/<host>/<path> instead (a relay; tests)


class BaostockConfig(_Section):
    """[source.baostock]: baostock's TCP API (docs/sources.md)."""

    requests_per_second: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    jitter: Annotated[float, msgspec.Meta(ge=0, le=5)] = 0.5
    window_days: Annotated[int, msgspec.Meta(ge=1, le=366)] = 60            # unused: each stock is asked once a run
    adjustflag: Literal["1", "2", "3"] = "3"                                # ignored unless "3" (logged): prices are stored raw
    request_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 20.0         # every socket operation, login included
    call_deadline_s: Annotated[float, msgspec.Meta(gt=0)] = 45.0            # one library call (login, paging included)
    request_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2          # extra attempts per request
    request_retry_backoff_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0     # doubles each retry
    give_up_after: Annotated[int, msgspec.Meta(ge=1)] = 3                   # days (or stocks) failed in a row: the rest is not asked
    market_daily: bool = True  # baostock >= 0.9.3: query_daily_history_k_AStock, the whole market a request
    server: str = ""           # host:port of the baostock server; empty: the library's own


class TushareConfig(_Section):
    """[source.tushare]: the Tushare Pro HTTP API, one request per trading day per dataset."""

    token: str = ""   # or $SYNCD_TUSHARE_TOKEN; never logged, never in a reply or an error
    url: str = ""     # empty: Tushare's public endpoint; set for a proxy or mirror
    requests_per_minute: Annotated[float, msgspec.Meta(gt=0)] = 120.0       # Tushare counts per minute and per dataset
    request_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 20.0          # one HTTP request
    call_deadline_s: Annotated[float, msgspec.Meta(gt=0)] = 45.0            # one call, whatever happens inside
    request_retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    request_retry_backoff_s: Annotated[float, msgspec.Meta(ge=0)] = 2.0
    give_up_after: Annotated[int, msgspec.Meta(ge=1)] = 3                   # days failed in a row before the rest is not asked

    def __repr__(self) -> str:  # keep the token out of any repr that reaches a log or a traceback
        return f"TushareConfig(token={'***' if self.token else ''!r}, url={self.url!r})"


SourceName = Literal["demo", "csv", "akshare", "baostock", "tushare"]
SOURCE_NAMES: tuple[str, ...] = get_args(SourceName)
_SOURCE_NAMED: dict[str, SourceName] = {name: name for name in get_args(SourceName)}


def source_named(value: str) -> SourceName | None:
    """`value` as a source name, if it is one (a wire field, say)."""
    return _SOURCE_NAMED.get(value)


class SourceConfig(_Section):
    """[source]: the primary source by name, its fallbacks, and each source's own table.

    `fallback`: other sources (each set up in its own [source.NAME] table), asked in order for a day
    the primary failed or left incomplete (docs/configuration.md, docs/sources.md "Primary and fallback")."""

    name: SourceName = "demo"
    fallback: list[SourceName] = []
    demo: DemoConfig = msgspec.field(default_factory=DemoConfig)
    csv: CsvConfig = msgspec.field(default_factory=CsvConfig)
    akshare: AkshareConfig = msgspec.field(default_factory=AkshareConfig)
    baostock: BaostockConfig = msgspec.field(default_factory=BaostockConfig)
    tushare: TushareConfig = msgspec.field(default_factory=TushareConfig)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for position, name in enumerate(self.fallback):
            if name == self.name:
                raise ValueError(f"source.fallback[{position}]: {name!r} is the primary source (source.name); "
                                 "expected other sources' names")
            if name in seen:
                raise ValueError(f"source.fallback[{position}]: {name!r} is listed twice; expected each source once")
            seen.add(name)

    def of(self, name: SourceName) -> SourceConfig:
        """This config with `name` as the source (a fallback built by load_source, with its own table's settings)."""
        return msgspec.structs.replace(self, name=name, fallback=[])


class VerifyConfig(_Section):
    """[verify]: reconciliation against a second source (docs/sources.md, "Reconciliation")."""

    against: SourceName | Literal[""] = ""                          # a source name; empty: off
    sample: Annotated[int, msgspec.Meta(ge=0, le=100000)] = 0      # stocks reconciled after each scheduled daily sync; 0: off
    max_requests: Annotated[int, msgspec.Meta(ge=1)] = 2000        # a reconcile planning more requests is refused


class ScheduleConfig(_Section):
    enabled: bool = True
    timezone: str = "Asia/Shanghai"
    daily_at: str = "20:00"
    missing_at: str = "21:00"
    missing_lookback_days: Annotated[int, msgspec.Meta(ge=1, le=3660)] = 30
    catch_up_on_start: bool = True

    def __post_init__(self) -> None:
        for key in ("daily_at", "missing_at"):
            value = getattr(self, key)
            if not _HHMM.match(value):
                raise ValueError(f"schedule.{key}: expected HH:MM or HH:MM:SS (24-hour), got {value!r}")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"schedule.timezone: unknown time zone {self.timezone!r} (expected an IANA name such as \"Asia/Shanghai\")") from None


class SyncConfig(_Section):
    max_days: Annotated[int, msgspec.Meta(ge=1)] = 12000
    retries: Annotated[int, msgspec.Meta(ge=0, le=100)] = 3
    retry_backoff_s: Annotated[float, msgspec.Meta(ge=0)] = 5.0


class LogConfig(_Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class MetricsConfig(_Section):
    listen: str = ""  # "HOST:PORT": Prometheus text format at http://HOST:PORT/metrics; empty: off

    def __post_init__(self) -> None:
        if self.listen:
            listen_address(self.listen)

    @property
    def address(self) -> tuple[str, int] | None:
        return listen_address(self.listen) if self.listen else None


ALERT_EVENTS = ("failed", "partial", "interrupted", "late")


class AlertConfig(_Section):
    webhook_url: str = ""  # env SYNCD_ALERT_WEBHOOK_URL overrides (it holds a secret: keep it out of config.toml)
    format: Literal["json", "dingtalk", "wecom", "slack"] = "json"
    on: list[Literal["failed", "partial", "interrupted", "late"]] = msgspec.field(default_factory=lambda: list(ALERT_EVENTS))  # type: ignore[arg-type]
    late_after: str = "22:00"  # in schedule.timezone: the latest completed trading day not synced by then is late
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 5.0    # per POST
    retries: Annotated[int, msgspec.Meta(ge=0, le=5)] = 2            # extra attempts after a failed POST

    def __post_init__(self) -> None:
        if not _HHMM.match(self.late_after):
            raise ValueError(f"alert.late_after: expected HH:MM or HH:MM:SS (24-hour), got {self.late_after!r}")
        if self.webhook_url and not is_webhook_url(self.webhook_url):
            raise ValueError("alert.webhook_url: expected an http:// or https:// URL")  # never echo it: it holds a secret


def is_webhook_url(url: str) -> bool:
    return re.match(r"(?i)^https?://[^/\s]+", url) is not None


def listen_address(listen: str) -> tuple[str, int]:
    """ "HOST:PORT" (or "[v6]:PORT") as (host, port); ValueError naming metrics.listen otherwise."""
    host, sep, port = listen.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"metrics.listen: expected HOST:PORT such as \"127.0.0.1:9464\", got {listen!r}")
    return host, int(port)


class Config(_Section):
    daemon: DaemonConfig = msgspec.field(default_factory=DaemonConfig)
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    source: SourceConfig = msgspec.field(default_factory=SourceConfig)
    schedule: ScheduleConfig = msgspec.field(default_factory=ScheduleConfig)
    sync: SyncConfig = msgspec.field(default_factory=SyncConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    alert: AlertConfig = msgspec.field(default_factory=AlertConfig)
    verify: VerifyConfig = msgspec.field(default_factory=VerifyConfig)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read, validate and resolve the config; `path=None` means ./config.toml if present, else defaults."""
    env = os.environ if env is None else env
    if path is None:
        path = DEFAULT_CONFIG_NAME if Path(DEFAULT_CONFIG_NAME).is_file() else None
    if path is None:
        config, base = Config(), Path.cwd()
    else:
        file = Path(path)
        try:
            raw = file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
        config, base = parse_config(raw, str(file)), file.resolve().parent
    return resolve(config, base, env)


def parse_config(raw: bytes, name: str = "config.toml") -> Config:
    try:
        return msgspec.toml.decode(raw, type=Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{name}: {_readable(str(exc))}") from None
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec decodes the bytes before parsing
        raise ConfigError(f"{name}: not valid TOML: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None


def _readable(detail: str) -> str:
    """msgspec says `$.schedule.daily_at`; operators know the key as schedule.daily_at."""
    text = re.sub(r"`\$\.?([^`]*)`", lambda m: f"`{m.group(1) or '(top level)'}`", detail)
    key = re.search(r"Invalid enum value .* - at `\$\.([^`]*)`", detail)
    if key and (choices := _literal_choices(re.sub(r"\[\d+\]", "", key.group(1)))):
        text += f"; expected one of: {', '.join(map(str, choices))}"
    return text


def _literal_choices(path: str) -> tuple[object, ...] | None:
    info: msgspec.inspect.Type = msgspec.inspect.type_info(Config)
    for name in path.split("."):
        if not isinstance(info, msgspec.inspect.StructType):
            return None
        info = next((f.type for f in info.fields if f.name == name), None)  # type: ignore[assignment]
        if isinstance(info, msgspec.inspect.ListType):  # a list of choices (alert.on): the item's
            info = info.item_type
    if isinstance(info, msgspec.inspect.UnionType):  # Literal | Literal (verify.against: a source name or "")
        parts = [t.values for t in info.types if isinstance(t, msgspec.inspect.LiteralType)]
        return tuple(value or '""' for values in parts for value in values) if len(parts) == len(info.types) else None
    return tuple(info.values) if isinstance(info, msgspec.inspect.LiteralType) else None


def resolve(config: Config, base: Path, env: Mapping[str, str]) -> Config:
    """Apply env overrides and make relative paths absolute against `base`."""
    daemon = config.daemon
    endpoint = env.get("SYNCD_ENDPOINT") or daemon.endpoint
    daemon = msgspec.structs.replace(
        daemon,
        endpoint=resolve_endpoint(endpoint, base, "SYNCD_ENDPOINT" if env.get("SYNCD_ENDPOINT") else "daemon.endpoint"),
        state_dir=str((base / daemon.state_dir).resolve()),
        curve_clients_dir=str((base / daemon.curve_clients_dir).resolve()) if daemon.curve_clients_dir else "",
    )
    database = config.database
    if env.get("SYNCD_DSN"):
        database = msgspec.structs.replace(database, dsn=env["SYNCD_DSN"])
    if env.get("SYNCD_LOCK_DSN"):
        database = msgspec.structs.replace(database, lock_dsn=env["SYNCD_LOCK_DSN"])
    source = config.source
    source = msgspec.structs.replace(source, csv=msgspec.structs.replace(source.csv, path=str((base / source.csv.path).resolve())))
    alert = config.alert
    if env.get("SYNCD_ALERT_WEBHOOK_URL"):
        if not is_webhook_url(env["SYNCD_ALERT_WEBHOOK_URL"]):
            raise ConfigError("SYNCD_ALERT_WEBHOOK_URL: expected an http:// or https:// URL")
        alert = msgspec.structs.replace(alert, webhook_url=env["SYNCD_ALERT_WEBHOOK_URL"])
    return msgspec.structs.replace(config, daemon=daemon, database=database, source=source, alert=alert)


def resolve_endpoint(endpoint: str, base: Path, key: str = "daemon.endpoint") -> str:
    """ipc://relative/path -> ipc:///abs/path; checks the socket path fits sun_path. `key` names the
    endpoint's origin in errors."""
    if not endpoint.startswith(("ipc://", "tcp://")):
        raise ConfigError(f"{key}: expected ipc://PATH or tcp://HOST:PORT, got {endpoint!r}")
    if not endpoint.startswith("ipc://"):
        return endpoint
    raw = endpoint[len("ipc://"):]
    if raw.startswith("@"):  # Linux abstract socket
        return endpoint
    path = (base / raw).resolve() if not raw.startswith("/") else Path(raw)
    if len(str(path)) > IPC_PATH_MAX:
        raise ConfigError(f"{key}: socket path {path} is {len(str(path))} bytes, over the {IPC_PATH_MAX}-byte limit of unix sockets; use a shorter path")
    return f"ipc://{path}"


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of an ipc:// endpoint (None for tcp:// and abstract sockets)."""
    if endpoint.startswith("ipc://") and not endpoint.startswith("ipc://@"):
        return Path(endpoint[len("ipc://"):])
    return None


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced, for logs and replies."""
    if not dsn:
        return "embedded"
    dsn = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(?i)(password\s*=\s*)('[^']*'|\S+)", r"\1***", dsn)


def dsn_password(dsn: str) -> str | None:
    """The password inside a DSN (URI or key=value form), if any."""
    match = re.search(r"://[^:/@]*:([^@]*)@", dsn) or re.search(r"(?i)password\s*=\s*'([^']*)'|(?i:password)\s*=\s*(\S+)", dsn)
    if not match:
        return None
    return next((g for g in match.groups() if g), None)


def scrub(text: str, *dsns: str) -> str:
    """`text` with the DSNs' passwords masked (for error messages that quote a connection string)."""
    for dsn in dsns:
        password = dsn_password(dsn)
        text = text.replace(password, "***") if password else text
    return text
