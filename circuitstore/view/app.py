"""The viewer as an ASGI app (Starlette): three pages, each shipped with its data inside, and
the calls a prompt page makes (a node's card, a pinned subgraph's scores, its export).

Safe by default (docs/view.md): every URL needs the token (in `?token=`, or the cookie the
first good request sets), compared in constant time; a request without it gets 403 and
nothing else. The app only reads (`CircuitStore` runs every statement in a read transaction)
and the browser never sees the store's credentials. Bad input gets a page or a JSON error that
says what is wrong, never a traceback, and the server keeps serving."""

from __future__ import annotations

import hmac
import html
import logging
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from circuitstore.query import CircuitStore
from circuitstore.schema.errors import (
    CircuitStoreError,
    NotFoundError,
    QueryError,
    StoreUnavailableError,
)
from circuitstore.view import payloads
from circuitstore.view.payloads import GraphCache, dumps, embedded

log = logging.getLogger(__name__)

# The prompt list's length: a page of this many rows sorts and filters at once in the browser.
PROMPT_LIMIT = 5000
# The most pinned nodes a score or export call takes (a prompt holds at most a few thousand).
MAX_PINNED = 10_000

STATIC = resources.files("circuitstore.view") / "static"


class TokenGuard:
    """403 for any request without the token; a good `?token=` also sets the cookie (named by
    port: cookies do not tell ports apart) so that the page's own requests need not carry it."""

    def __init__(self, app: ASGIApp, token: str, cookie: str) -> None:
        self.app, self.token, self.cookie = app, token, cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.query_params.get("token")
        if given is not None and self._good(given):
            await self.app(scope, receive, self._with_cookie(send))
        elif self._good(request.cookies.get(self.cookie, "")):
            await self.app(scope, receive, send)
        else:
            await _forbidden()(scope, receive, send)

    def _good(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _with_cookie(self, send: Send) -> Send:
        cookie = f"{self.cookie}={self.token}; Path=/; HttpOnly; SameSite=Strict"

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
            await send(message)

        return sending


def _forbidden() -> Response:
    return HTMLResponse(
        _page(
            "403",
            "<p class='error'>403: this viewer needs its token. Open the full URL that "
            "<code>circuitstore view</code> printed (it ends in <code>?token=...</code>).</p>",
        ),
        status_code=403,
    )


def create_app(store: CircuitStore, token: str, port: int) -> Starlette:
    """The viewer over `store`, guarded by `token` (the cookie named after `port`)."""
    cache = GraphCache(store)
    views = Views(store, cache)
    routes = [
        Route("/", views.prompts),
        Route("/prompt/{key:path}", views.prompt),
        Route("/feature/{name:path}", views.feature),
        Route("/api/node", views.node),
        Route("/api/scores", views.scores),
        Route("/api/export", views.export),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    middleware = [
        Middleware(TrustedHostMiddleware, allowed_hosts=["127.0.0.1", "localhost"]),
        Middleware(TokenGuard, token=token, cookie=f"circuitstore-view-{port}"),
    ]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.cache = cache
    return app


class Views:
    """The pages and calls. Each runs its store reads in Starlette's thread pool (the driver is
    synchronous) and turns the project's errors into a page or JSON error that names them."""

    def __init__(self, store: CircuitStore, cache: GraphCache) -> None:
        self.store, self.cache = store, cache

    async def prompts(self, request: Request) -> Response:
        def build() -> str:
            return embedded(payloads.prompt_list(self.store, PROMPT_LIMIT))

        return await _html(request, "Prompts", "prompts", build)

    async def prompt(self, request: Request) -> Response:
        key = request.path_params["key"]

        return await _html(request, f"Prompt {key}", "prompt", lambda: self.cache.get(key).page)

    async def feature(self, request: Request) -> Response:
        name = request.path_params["name"]
        return await _html(
            request,
            f"Feature {name}",
            "feature",
            lambda: embedded(payloads.feature_page(self.store, name)),
        )

    async def node(self, request: Request) -> Response:
        def build() -> dict[str, Any]:
            key, node = _param(request, "prompt"), _param(request, "node")
            return payloads.node_card(self.store, self.cache.get(key), node)

        return await _json(build)

    async def scores(self, request: Request) -> Response:
        def build() -> dict[str, Any]:
            key, pinned = _param(request, "prompt"), _pinned(request)
            found = self.store.subgraph_scores(self.cache.get(key).info.key, pinned)
            return {"replacement": found.replacement, "completeness": found.completeness}

        return await _json(build)

    async def export(self, request: Request) -> Response:
        def build() -> dict[str, Any]:
            key, pinned = _param(request, "prompt"), _pinned(request)
            return self.store.export_graph(key, pinned=pinned or None)

        response = await _json(build)
        if response.status_code == 200:
            key = request.query_params.get("prompt", "graph")
            name = quote(f"{key}-subgraph.json" if _pinned(request) else f"{key}.json")
            response.headers["content-disposition"] = f"attachment; filename*=UTF-8''{name}"
        return response


def _param(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise QueryError(f"missing parameter {name!r}")
    return value


def _pinned(request: Request) -> list[str]:
    pinned = [p for p in request.query_params.getlist("pinned") if p]
    if len(pinned) > MAX_PINNED:
        raise QueryError(f"{len(pinned)} pinned nodes: at most {MAX_PINNED}")
    return pinned


def _status(exc: CircuitStoreError) -> int:
    """404 for an unknown name, 400 for a malformed one, 503 for a store that is down."""
    if isinstance(exc, StoreUnavailableError):
        return 503
    if isinstance(exc, NotFoundError):
        return 404
    return 400 if isinstance(exc, QueryError) else 500


async def _run(build: Callable[[], Any]) -> tuple[Any, int, str | None]:
    """`build()` in the thread pool: (result, 200, None) or (None, status, message)."""
    try:
        return await run_in_threadpool(build), 200, None
    except CircuitStoreError as exc:
        return None, _status(exc), str(exc)
    except Exception as exc:  # the page says so; the server keeps serving
        log.exception("circuitstore view: internal error")
        return None, 500, f"internal error: {type(exc).__name__}: {exc}"


async def _json(build: Callable[[], Any]) -> Response:
    result, status, message = await _run(build)
    if message is not None:
        return JSONResponse({"error": message}, status_code=status)
    return Response(dumps(result), media_type="application/json")


async def _html(request: Request, title: str, kind: str, build: Callable[[], str]) -> Response:
    """The page `kind` with its data (`build()`: JSON to embed, see `payloads.embedded`)."""
    # A bad or missing key in a pasted URL is a query error before the store is read at all.
    if request.path_params.get("key", None) == "" or request.path_params.get("name", None) == "":
        return HTMLResponse(_page(title, _error("missing name in the URL")), status_code=400)
    result, status, message = await _run(build)
    if message is not None:
        return HTMLResponse(_page(title, _error(message)), status_code=status)
    body = (
        f"<main id='app' data-page='{kind}'></main>"
        f"<script type='application/json' id='payload'>{result}</script>"
        f"<script src='/static/vendor/d3.min.js'></script>"
        f"<script src='/static/common.js'></script>"
        f"<script src='/static/{kind}.js'></script>"
    )
    return HTMLResponse(_page(title, body))


def _error(message: str) -> str:
    return f"<p class='error' role='alert'>{html.escape(message, quote=False)}</p>"


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)} · circuitstore</title>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'self'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:\">"
        "<link rel='icon' href='data:,'><link rel='stylesheet' href='/static/view.css'>"
        "</head><body>"
        "<header><a class='home' href='/'>circuitstore</a>"
        f"<span class='title'>{html.escape(title)}</span></header>"
        f"{body}</body></html>"
    )
