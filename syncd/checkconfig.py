"""`syncd --check-config PATH`: validate a config as the daemon would at start, and print it resolved.

Owns the checks a start makes before it touches anything (the file's keys and values, the
endpoint and its CURVE keys, the client certificates, the DSNs' syntax and options, the source's
extra and token) and the rendering of the resolved config (relative paths made absolute, the
SYNCD_* environment overrides applied) as TOML with its secrets masked: the DSNs' passwords,
the CURVE secret key, the Tushare token and the alert webhook's tokens. It opens no database
connection, binds no socket and takes no lock, so it can run beside a live daemon (systemd's
ExecStartPre) or on a machine that cannot reach the database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from .config import Config, redact_dsn

MASK = "***"
_TOKEN_SEGMENT = re.compile(r"(?=.*[\dA-Z])[A-Za-z0-9_-]{8,}")  # a path segment that looks like a key (Slack's T…/B…/…)


def check(config: Config, env: Mapping[str, str]) -> None:
    """Raise ConfigError (or SourceUnavailable) for what would stop the daemon before it touches anything."""
    from .control.curve import check_endpoint, load_client_keys
    from .preflight import check_database
    from .sources import check_against, check_source

    daemon = config.daemon
    check_endpoint(daemon.endpoint, daemon.curve_public_key, daemon.curve_secret_key)
    if daemon.curve_clients_dir:
        load_client_keys(Path(daemon.curve_clients_dir))
    check_database(config.database, env)
    check_source(config.source, env)
    check_against(config.source, config.verify.against, env)


def render(config: Config) -> str:
    """The resolved config as TOML, secrets masked."""
    data = msgspec.to_builtins(config)
    database = data["database"]
    for key in ("dsn", "lock_dsn"):
        database[key] = redact_dsn(database[key]) if database[key] else ""
    if data["daemon"]["curve_secret_key"]:
        data["daemon"]["curve_secret_key"] = MASK
    if data["source"]["tushare"]["token"]:
        data["source"]["tushare"]["token"] = MASK
    data["alert"]["webhook_url"] = mask_url(data["alert"]["webhook_url"])
    return "# resolved: paths absolute, SYNCD_* environment applied, secrets masked\n" + _toml(data)


def mask_url(url: str) -> str:
    """A webhook URL with its secrets masked: a password, every query value (DingTalk's access_token,
    WeCom's key) and any path segment that looks like a key (Slack's /services/T…/B…/…)."""
    if not url:
        return url
    scheme, _, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    authority = re.sub(r"^([^:@/]*):[^@/]*@", rf"\1:{MASK}@", authority)
    path, question, query = tail.partition("?")
    path = "/".join(MASK if _TOKEN_SEGMENT.fullmatch(part) else part for part in path.split("/"))
    query = re.sub(r"=([^&#]*)", f"={MASK}", query)
    return f"{scheme}://{authority}{slash}{path}{question}{query}"


def _toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """Tables after their scalar keys, nested tables by dotted name (what msgspec's own encoder would
    write, without its optional tomli_w dependency)."""
    lines = [f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in data.items()
             if value is not None and not isinstance(value, dict)]
    out = (f"\n[{prefix}]\n" if prefix and lines else "") + "".join(line + "\n" for line in lines)
    for key, value in data.items():
        if isinstance(value, dict):
            out += _toml(value, f"{prefix}.{key}" if prefix else key)
    return out
