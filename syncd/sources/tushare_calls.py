"""Child side of the Tushare Pro source (runs in child.py's process): one HTTP POST per call.

Tushare's documented HTTP API: POST `{"api_name", "token", "params", "fields"}` to the
endpoint, answered by `{"code", "msg", "data": {"fields", "items"}}`; code 0 is success.
`query` returns (fields, items) and turns every other answer into a `Failure` whose kind
says what to do: "rejected" (bad token, no permission, a daily quota: retrying cannot help),
"rate_limited" (a per-minute quota: wait), "banned" (HTTP 403/429/456, an empty body),
"network", "bad_answer". The token travels in each call, is sent only in the request body,
and is blanked out of any text that is returned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from .child import Failure

BAN_STATUSES = {403, 429, 456}


def classify(code: Any, message: str) -> str:
    """The failure kind of a Tushare answer with a non-zero code."""
    if code == 40101 or "token" in message.lower():
        return "rejected"
    if "最多访问" in message and ("每分钟" in message or "分钟" in message):
        return "rate_limited"
    if code == 40203 or "权限" in message or "最多访问" in message:
        return "rejected"
    return "error"


class TushareHttp:
    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.session = requests.Session()

    def query(self, api_name: str, token: str, params: dict[str, Any], fields: str) -> tuple[list[str], list[list[Any]]]:
        body: dict[str, Any] = {"api_name": api_name, "token": token, "params": params, "fields": fields}
        try:
            response = self.session.post(self.url, json=body, timeout=(min(10.0, self.timeout_s), self.timeout_s))
        except requests.Timeout as exc:
            raise Failure("network", f"timed out: {type(exc).__name__}") from None
        except requests.RequestException as exc:
            raise Failure("network", _blank(f"{type(exc).__name__}: {exc}", token)) from None
        if response.status_code in BAN_STATUSES:
            raise Failure("banned", f"HTTP {response.status_code} from {self.url}")
        if not response.content.strip():
            raise Failure("banned", f"an empty answer (HTTP {response.status_code}) from {self.url}")
        if response.status_code >= 400:
            raise Failure("network", f"HTTP {response.status_code} from {self.url}")
        try:
            answer = response.json()
            code, message = answer.get("code"), _blank(str(answer.get("msg") or ""), token)
        except (ValueError, AttributeError):
            raise Failure("bad_answer", f"not a Tushare answer: {response.text[:80]!r}") from None
        if code != 0:
            raise Failure(classify(code, message), f"Tushare code {code}: {message or 'no message'}")
        data = answer.get("data") or {}
        fields_out, items = data.get("fields"), data.get("items")
        if not isinstance(fields_out, list) or not isinstance(items, list):
            raise Failure("bad_answer", "the answer has no data.fields / data.items")
        return fields_out, items


def _blank(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


def setup(options: dict[str, Any]) -> dict[str, Callable[..., Any]]:
    client = TushareHttp(str(options["url"]), float(options["request_timeout_s"]))
    return {"query": client.query}
