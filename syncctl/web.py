"""syncctl.web: an HTTP face for syncd — a FastAPI router that forwards to the daemon, and a status page.

This module owns the HTTP contract (docs/web.md): the routes under
`/api/v1/sync-status`, the mapping of syncd's replies and SyncClient's typed errors to HTTP
status codes (busy -> 409 with the seed's body, bad dates -> 422, daemon unreachable -> 503),
and serving the one static status page. It never syncs anything and keeps no state of its
own: every call is one SyncClient request to the daemon, which alone decides. SyncClient
blocks (zmq), so every route that calls syncd is a plain `def` that FastAPI runs in its
threadpool (the event loop never waits on zmq) and waits at most the client's timeout; the
page routes touch no socket and are `async`. The client comes from `make_router(client)`, else
from `app.state.syncd_client` (set by `configure` or `create_app`), else $SYNCD_ENDPOINT per call.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import os
import re
import secrets
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from syncd import __version__
from syncd.protocol import CheckReply, Days, ErrorCode, History, Verify, parse_date

from .client import DEFAULT_TIMEOUT_S, SyncClient, SyncdBusy, SyncdProtocolError, SyncdRequestError, SyncdUnreachable

PREFIX = "/api/v1/sync-status"
BUSY_MESSAGE = "已有同步任务正在运行，请等待当前任务完成后再试"
STATE_KEY = "syncd_client"
WEB_TASK_TYPE = "web_batch"
_API_PLACEHOLDER = "__SYNCD_API__"
_LANG_PLACEHOLDER = "__SYNCD_LANG__"
TOKEN_ENV = "SYNCD_WEB_TOKEN"
PAGE_LANGUAGES = ("en", "zh")
FAVICON_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="7" '
               'fill="#2563eb"/><path d="M7 21l6-7 5 4 7-9" fill="none" stroke="#fff" stroke-width="3" '
               'stroke-linecap="round" stroke-linejoin="round"/></svg>')

# syncd's error codes -> HTTP status; a code not listed here is the daemon's own failure (502)
RECONCILE_WAIT_S = 25.0  # GET /verify?against= answers within about this; a longer one is polled by reconcile_id
HTTP_STATUS_FOR_CODE: dict[str, int] = {
    ErrorCode.BAD_REQUEST: 422,
    ErrorCode.INVALID_RANGE: 422,
    ErrorCode.NOT_RUNNING: 409,
    ErrorCode.DATABASE_UNAVAILABLE: 503,
    "not_configured": 503,
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"description": "a sync is already running (start), or nothing to cancel (cancel)"},
    422: {"description": "bad dates: unparseable, impossible, start after end, or range too long"},
    502: {"description": "syncd answered with an internal error or an unintelligible reply"},
    503: {"description": "syncd unreachable within the timeout, its database unavailable, or no endpoint configured"},
}


class BatchSync(BaseModel):
    """Body of POST /sync/batch: an inclusive range of calendar days."""

    start_date: str = Field(examples=["2025-10-01"], description="first day, YYYY-MM-DD")
    end_date: str = Field(examples=["2025-10-10"], description="last day, YYYY-MM-DD (inclusive)")


class CancelBody(BaseModel):
    """Optional body of POST /cancel: cancel only if this run is the current one."""

    run_id: str | None = None


# --- configuration ---------------------------------------------------------------------------
def configure(app: FastAPI, endpoint: str | None = None, timeout: float = DEFAULT_TIMEOUT_S, *,
              client: SyncClient | None = None) -> SyncClient:
    """Give `app`'s sync-status routes their SyncClient (stored in app.state); return it.

    `client` wins; else a SyncClient on `endpoint` (default $SYNCD_ENDPOINT) with `timeout`
    seconds per call. Raises ValueError when there is no endpoint at all.
    """
    chosen = client or SyncClient(endpoint, timeout=timeout)
    setattr(app.state, STATE_KEY, chosen)
    return chosen


class NotConfigured(SyncdRequestError):
    def __init__(self) -> None:
        super().__init__("not_configured", "no syncd endpoint configured: call syncctl.web.configure(app, "
                                           "endpoint=...) or set SYNCD_ENDPOINT", {})


def client_for(app: Any) -> SyncClient:
    """The app's configured SyncClient, else a fresh one from $SYNCD_ENDPOINT (cheap: no socket is kept)."""
    configured = getattr(app.state, STATE_KEY, None)
    if configured is not None:
        return configured
    if not os.environ.get("SYNCD_ENDPOINT"):
        raise NotConfigured()
    return SyncClient()


# --- replies ---------------------------------------------------------------------------------
def _json(status_code: int, body: Any) -> Response:
    return Response(content=msgspec.json.encode(body), status_code=status_code, media_type="application/json")


def _error(code: str, message: str) -> dict[str, str]:
    return {"status": "error", "code": code, "message": message}


def forward(call: Callable[[], Any]) -> Response:
    """Run one SyncClient call; its reply -> 200, each typed error -> its HTTP status and JSON body."""
    try:
        return _json(200, call())
    except SyncdBusy as busy:  # the seed product's body, as its pages read it: "error" here, where the wire says "rejected"
        return _json(409, {"status": "error", "message": BUSY_MESSAGE, "current_task": busy.current_task})
    except SyncdRequestError as exc:
        return _json(HTTP_STATUS_FOR_CODE.get(exc.code, 502), _error(exc.code, exc.message))
    except SyncdUnreachable as exc:
        return _json(503, _error("unreachable", str(exc)))
    except SyncdProtocolError as exc:
        return _json(502, _error("bad_reply", str(exc)))


def forward_check(call: Callable[[], CheckReply]) -> Response:
    """`check` for uptime monitors: the reply's body with 200 when healthy, 503 when not; errors as `forward`."""
    response = forward(call)
    if response.status_code == 200 and not msgspec.json.decode(response.body).get("healthy"):
        response.status_code = 503
    return response


def date_field(field: str, value: str) -> dt.date:
    """A request's date by the wire's one rule (protocol.parse_date), or SyncdRequestError(bad_request), a 422,
    naming the field and the reason."""
    try:
        return parse_date(value, field)
    except ValueError as exc:
        raise SyncdRequestError(ErrorCode.BAD_REQUEST, str(exc), {}) from None


def requester(request: Request) -> str:
    return f"web:{request.client.host}"[:200] if request.client else "web"


# --- authentication --------------------------------------------------------------------------
def bearer_token_auth(token: str) -> Callable[..., None]:
    """A FastAPI dependency: the request must carry `Authorization: Bearer <token>`, else 401.

    The comparison is constant-time (secrets.compare_digest), so the answer's timing tells nothing
    about how much of a guess was right.
    """
    if not token:
        raise ValueError("an empty web token would let everyone in: set a non-empty token")
    expected = token.encode()
    scheme = HTTPBearer(auto_error=False, description=f"the token in ${TOKEN_ENV} (or create_app(token=...))")

    # Depends as a default value: under `from __future__ import annotations` an Annotated[..., Depends(scheme)]
    # would be a string naming a local, which FastAPI cannot resolve
    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:  # noqa: B008
        given = credentials.credentials.encode() if credentials is not None else b""
        if not secrets.compare_digest(given, expected):
            raise HTTPException(401, "missing or wrong token: send Authorization: Bearer <token>",
                                headers={"WWW-Authenticate": 'Bearer realm="syncd"'})

    return require_token


# --- the router ------------------------------------------------------------------------------
def make_router(client: SyncClient | None = None, *, dependencies: Sequence[Any] = ()) -> APIRouter:
    """The sync-status routes; they use `client` if given, else the app's (see `client_for`).

    `dependencies` (e.g. `[Depends(bearer_token_auth(token))]`) guard the API routes only: the status
    page at `<prefix>/page` stays reachable so that a browser can load it and then send the token.
    """
    router = APIRouter(tags=["sync-status"], responses=ERROR_RESPONSES)  # what is mounted: the page and the API
    api = APIRouter(dependencies=list(dependencies))                      # every API route, guarded

    @router.get("/page", response_class=HTMLResponse, include_in_schema=False)
    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(status_page(request.url.path.removesuffix("/page"), request.headers.get("accept-language")))

    def pick(request: Request) -> SyncClient:
        return client if client is not None else client_for(request.app)

    @api.post("/sync/batch", summary="Start a sync of a date range (task_type web_batch)")
    def sync_batch(body: BatchSync, request: Request) -> Response:
        def call() -> Any:
            start, end = date_field("start_date", body.start_date), date_field("end_date", body.end_date)
            return pick(request).start(start, end, task_type=WEB_TASK_TYPE, requested_by=requester(request))
        return forward(call)

    @api.get("/status", summary="The current run with its progress, the last run, the schedule")
    def status(request: Request) -> Response:
        return forward(lambda: pick(request).status())

    @api.get("/history", summary="Recent runs, newest first")
    def history(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> Response:
        return forward(lambda: pick(request).call(History(limit=limit)))

    @api.get("/days", summary="Each calendar day's sync status in a range")
    def days(request: Request, start_date: Annotated[str, Query(examples=["2025-10-01"])],
             end_date: Annotated[str, Query(examples=["2025-10-31"])]) -> Response:
        def call() -> Any:
            start, end = date_field("start_date", start_date), date_field("end_date", end_date)
            return pick(request).call(Days(start_date=start, end_date=end))
        return forward(call)

    @api.get("/verify", summary="Each day's coverage and anomalies in a range (the first findings of each); with "
                                "`against`, compared with that source first (a reconciliation)")
    def verify(request: Request, start_date: Annotated[str, Query(examples=["2025-10-01"])],
               end_date: Annotated[str, Query(examples=["2025-10-31"])],
               against: Annotated[str | None, Query(examples=["baostock"])] = None,
               plan_only: bool = False, reconcile_id: str | None = None) -> Response:
        def call() -> Any:
            start, end = date_field("start_date", start_date), date_field("end_date", end_date)
            client = pick(request)
            if against is None:
                return client.call(Verify(start_date=start, end_date=end))
            if reconcile_id is not None:  # a reconciliation this route returned still running: its progress
                return client.call(Verify(start_date=start, end_date=end, against=against, reconcile_id=reconcile_id,
                                          wait_s=round(client.timeout / 2, 3)))
            return client.reconcile(start, end, against, plan_only=plan_only, deadline_s=RECONCILE_WAIT_S)
        return forward(call)

    @api.get("/check", summary="Is the data fresh? 200 healthy, 503 not (same body: the daemon's check reply)",
                responses={503: {"description": "unhealthy (the check's body), or syncd unreachable"}})
    def check(request: Request) -> Response:
        return forward_check(lambda: pick(request).check())

    @api.post("/cancel", summary="Cancel the current run (409 not_running when nothing runs)")
    def cancel(request: Request, body: Annotated[CancelBody | None, Body()] = None) -> Response:
        return forward(lambda: pick(request).cancel(body.run_id if body else None))

    router.include_router(api)
    return router


router = make_router()
"""Mount with `app.include_router(router, prefix=PREFIX)`; configure its client with `configure(app, ...)`."""


# --- the page and the app --------------------------------------------------------------------
@functools.cache
def _page_template() -> str:
    return (resources.files("syncctl") / "static" / "index.html").read_text(encoding="utf-8")


def status_page(api_base: str, accept_language: str | None = None) -> str:
    """The status page's HTML, talking to the routes mounted at `api_base`, in the language the
    browser prefers (its Accept-Language; the page has a switch too)."""
    return (_page_template().replace(_API_PLACEHOLDER, html.escape(api_base.rstrip("/"), quote=True))
            .replace(_LANG_PLACEHOLDER, page_language(accept_language)))


def page_language(accept_language: str | None) -> str:
    """"zh" or "en": the first of PAGE_LANGUAGES in the header's order of preference (q-values), else "en"."""
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate((accept_language or "").split(",")):
        match = re.fullmatch(r"\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9-]*)?\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*", item)
        if match is None:
            continue
        try:
            quality = float(match.group(2)) if match.group(2) else 1.0
        except ValueError:
            continue
        if quality > 0 and match.group(1).lower() in PAGE_LANGUAGES:
            ranked.append((-quality, position, match.group(1).lower()))
    return min(ranked)[2] if ranked else "en"


def create_app(endpoint: str | None = None, timeout: float = DEFAULT_TIMEOUT_S, *, token: str | None = None) -> FastAPI:
    """A FastAPI app: the router at PREFIX and the status page at `/`.

    `endpoint` defaults to $SYNCD_ENDPOINT, so `uvicorn --factory syncctl.web:create_app`
    works; raises ValueError when neither is set. `token` defaults to $SYNCD_WEB_TOKEN: when set,
    every API call needs `Authorization: Bearer <token>` (401 otherwise).
    """
    app = FastAPI(title="syncd sync status", version=__version__,
                  description="Start, watch and inspect syncd's syncs. Forwards to syncd; never syncs itself.")
    configure(app, endpoint, timeout)
    token = token if token is not None else os.environ.get(TOKEN_ENV, "")
    guard = [Depends(bearer_token_auth(token))] if token else []
    app.include_router(make_router(dependencies=guard), prefix=PREFIX)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request) -> HTMLResponse:  # async: no syncd call, so it answers even when the threadpool is full
        return HTMLResponse(status_page(PREFIX, request.headers.get("accept-language")))

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(FAVICON_SVG, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})

    return app


__all__ = ["BUSY_MESSAGE", "PREFIX", "bearer_token_auth", "configure", "create_app", "make_router", "router", "status_page"]
