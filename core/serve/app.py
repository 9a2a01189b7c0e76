"""The Starlette app of `corral serve`: OpenAI's routes over core, with a bearer token compared
in constant time, limits on bodies, CORS only when configured, and errors in OpenAI's shape.

Blocking work (models, guard, embedders, Chroma) runs in worker threads, never on the event
loop; a chat turn runs in its own thread (core.serve.chat) and reaches the loop through a
queue. A streaming client that disconnects cancels its turn.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from anyio import to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.config import Settings
from core.serve import responses, services
from core.serve.chat import ChatPlan, ChatRun, ChatService, Item
from core.serve.responses import Answer
from core.serve.shapes import (
    MAX_BODY_BYTES,
    ApiError,
    ChatRequest,
    EmbeddingRequest,
    ModerationRequest,
    SearchRequest,
    new_id,
    now,
    parse,
)

log = logging.getLogger("corral.serve")
access = logging.getLogger("corral.serve.access")

#: how often a waiting non-streamed request looks whether its client is still there
DISCONNECT_POLL_S = 0.25


class ServeState:
    """What the routes share: settings, the token, and the services."""

    def __init__(self, settings: Settings, token: str = "", *, history: bool | None = None
                 ) -> None:
        self.settings = settings
        self.token = token
        self.chat = ChatService(settings, history=history)
        self.embeddings = services.Embeddings(settings)
        self.moderation = services.Moderation(settings)

    def authorize(self, request: Request) -> None:
        if not self.token:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("utf-8", "replace"), self.token.encode("utf-8"))
        if not ok:
            raise ApiError(401, "missing or wrong API token: send 'Authorization: Bearer "
                                "TOKEN' with the token `corral serve` was given",
                           code="invalid_api_key")

    def close(self) -> None:
        self.chat.close()


def error_response(exc: BaseException) -> JSONResponse:
    err = responses.as_api_error(exc)
    return JSONResponse(err.body(), status_code=err.status)


async def read_json(request: Request) -> Any:
    length = request.headers.get("content-length", "")
    if length and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes",
                       code="body_too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, f"the request body is larger than {MAX_BODY_BYTES} bytes",
                           code="body_too_large")
    try:
        return json.loads(bytes(body))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "the request body is not valid JSON", code="invalid_json") from None


Handler = Callable[[Request, ServeState], Awaitable[Response]]


def endpoint(state: ServeState, fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Authorize, run, and turn every failure into OpenAI's error shape."""

    async def handle(request: Request) -> Response:
        try:
            state.authorize(request)
            return await fn(request, state)
        except Exception as exc:
            return error_response(exc)

    return handle


# --- routes ----------------------------------------------------------------------------------


async def models(request: Request, state: ServeState) -> Response:
    data = await to_thread.run_sync(services.list_models, state.settings)
    return JSONResponse({"object": "list", "data": data})


async def embeddings(request: Request, state: ServeState) -> Response:
    req = parse(EmbeddingRequest, await read_json(request))
    return JSONResponse(await to_thread.run_sync(state.embeddings, req))


async def moderations(request: Request, state: ServeState) -> Response:
    req = parse(ModerationRequest, await read_json(request))
    return JSONResponse(await to_thread.run_sync(state.moderation, req))


async def search(request: Request, state: ServeState) -> Response:
    req = parse(SearchRequest, await read_json(request))
    kb = str(request.path_params["kb"])
    return JSONResponse(await to_thread.run_sync(services.search, state.settings, kb, req))


class _Bridge:
    """A run's items, handed from its thread to the event loop."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Item] = asyncio.Queue()

    def put(self, item: Item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is gone: the server stopped
            pass

    async def get(self, request: Request | None = None) -> Item:
        """The next item; with ``request``, Cancelled-like ApiError once its client left."""
        while True:
            try:
                return await asyncio.wait_for(self.queue.get(), DISCONNECT_POLL_S)
            except TimeoutError:
                if request is not None and await request.is_disconnected():
                    raise ApiError(499, "the client closed the connection") from None


async def chat_completions(request: Request, state: ServeState) -> Response:
    req = parse(ChatRequest, await read_json(request))
    plan = await to_thread.run_sync(state.chat.plan, req)
    bridge = _Bridge()
    run = state.chat.start(plan, bridge.put)
    answer = Answer(plan, plan.hold)
    done = False
    try:
        first = await bridge.get(request)
        if first[0] == "error":
            raise first[1]
        if plan.stream:
            done = True  # the stream owns the run from here
            return _stream(run, bridge, answer, first, state)
        item = first
        while item[0] != "end":
            if item[0] == "error":
                raise item[1]
            answer.feed(item[1])
            item = await bridge.get(request)
        done = True
        return JSONResponse(responses.completion(answer, new_id("chatcmpl"), now(),
                                                 history=state.chat.history))
    finally:
        if not done:
            run.cancel()


def _stream(run: ChatRun, bridge: _Bridge, answer: Answer, first: Item, state: ServeState
            ) -> Response:
    from sse_starlette.sse import EventSourceResponse

    cid, created = new_id("chatcmpl"), now()
    plan: ChatPlan = answer.plan

    def sse(obj: Any) -> str:
        return json.dumps(obj, ensure_ascii=False)

    async def events() -> AsyncIterator[str]:
        finished = False
        try:
            yield sse(responses.chunk(answer, cid, created, {"role": "assistant", "content": ""}))
            item = first
            while item[0] != "end":
                if item[0] == "error":
                    yield sse(responses.as_api_error(item[1]).body())
                    break
                text = answer.feed(item[1])
                if text:
                    yield sse(responses.chunk(answer, cid, created, {"content": text}))
                item = await bridge.queue.get()
            else:
                yield sse(responses.chunk(answer, cid, created, {}, answer.finish_reason,
                                          corral=answer.corral(history=state.chat.history)))
                if plan.include_usage:
                    yield sse(responses.usage_chunk(answer, cid, created))
                yield "[DONE]"
            finished = True
        finally:
            if not finished:
                run.cancel()  # the client left: stop the answer, free the engine

    return EventSourceResponse(events(), sep="\n")


# --- the app ---------------------------------------------------------------------------------


class AccessLog:
    """One log record per request: method, path, status and milliseconds (``fields``, which
    the runner's JSON log format writes as keys)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [0]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            ms = round((time.perf_counter() - started) * 1000, 1)
            record = {"method": scope.get("method"), "path": scope.get("path"),
                      "status": status[0], "ms": ms}
            access.info("%s %s %s %.1f ms", record["method"], record["path"], record["status"],
                        ms, extra={"fields": record})


def create_app(settings: Settings, *, token: str = "", state: ServeState | None = None
               ) -> Starlette:
    """The API app; ``token`` empty: no token asked (loopback only, the runner checks)."""
    state = state or ServeState(settings, token)

    def route(path: str, fn: Handler, method: str) -> Route:
        return Route(path, endpoint(state, fn), methods=[method])

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = {404: f"no such route: {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(
            status, "the request could not be handled")
        return JSONResponse(ApiError(status, message).body(), status_code=status)

    middleware = [Middleware(AccessLog)]
    origins = list(settings.serve.cors_origins)
    if origins:  # CORS is off unless configured
        from starlette.middleware.cors import CORSMiddleware

        middleware.append(Middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],  # type: ignore[arg-type]
            allow_headers=["authorization", "content-type"]))
    app = Starlette(routes=[
        route("/v1/models", models, "GET"),
        route("/v1/chat/completions", chat_completions, "POST"),
        route("/v1/embeddings", embeddings, "POST"),
        route("/v1/moderations", moderations, "POST"),
        route("/v1/vector_stores/{kb}/search", search, "POST"),
    ], middleware=middleware, exception_handlers={HTTPException: not_found})
    app.state.serve = state
    return app
