"""What every HTTP server (the connector's two listeners, the query API, a worker's
metrics port) does the same way.

JSON bodies, the route template of a request (what logs and metrics name: the path may
carry an email), `Expect` handling that cannot fail, the one summary log line per
request, and the limits every server runs with (`application`, `runner`): a request
body must arrive within `BODY_DEADLINE_S` of the request's start (408 otherwise, the
handler never waits on a trickling client), and an idle keep-alive connection is closed
after `KEEPALIVE_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from aiohttp import HttpVersion11, web

from common.logs import fields

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


def route_of(request: web.Request) -> str:
    """The matched route's template (`/segments/{segment_id}`), or "unmatched"."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


async def expect_handler(request: web.Request) -> None:
    """`Expect: 100-continue` as aiohttp does it; any other expectation a plain 417.

    aiohttp's own handler puts the header's value into its 417 text, and a value that is
    not UTF-8 then fails to encode: a 500, outside every middleware (found by
    tests/reliability/test_fuzz_webhooks.py).
    """
    if request.headers.get("Expect", "").lower() == "100-continue":
        if request.version == HttpVersion11:
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return
    raise web.HTTPExpectationFailed(text="unsupported Expect header")


def log_request(logger: logging.Logger, method: str, where: str, status: int,
                seconds: float, **extra: Any) -> None:
    """The one summary line of a request, from chosen fields only (never headers or
    bodies); `where` is a route template or a path that names no person."""
    logger.info("%s %s %d", method, where, status,
                extra=fields(method=method, route=where, status=status,
                             ms=round(seconds * 1000, 2), **extra))


#: Seconds a request's whole body may take to arrive, counted from its start.
BODY_DEADLINE_S = 10.0
#: Seconds an idle keep-alive connection stays open (aiohttp's default is 75).
KEEPALIVE_TIMEOUT_S = 15.0
#: Largest request body any of our servers reads.
MAX_BODY_BYTES = 1 << 20


def body_deadline(seconds: float = BODY_DEADLINE_S) -> Any:
    """Middleware: a body not fully received `seconds` after the request started fails
    every read of it (`HTTPRequestTimeout`, which every middleware of ours passes on),
    and the client gets a 408 and the connection is closed: the rest of the body is
    never waited for.

    aiohttp has no read timeout of its own: a client sending one byte a second would hold
    a handler (and, for a webhook, an in-flight slot) for as long as it likes.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.can_read_body:
            return await handler(request)
        content = request.content
        expired = False

        def expire() -> None:
            nonlocal expired
            if not content.is_eof():
                expired = True
                content.set_exception(web.HTTPRequestTimeout())

        timer = asyncio.get_running_loop().call_later(seconds, expire)
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
        except web.HTTPRequestTimeout:
            if not expired:
                raise
        finally:
            timer.cancel()
        if not expired and response is not None:
            return response
        if response is None or not response.prepared:
            response = json_response({"error": "request body not received in time"}, 408)
            response.force_close()
            await response.prepare(request)
            await response.write_eof()
        # Hang up: otherwise aiohttp would go on reading (and failing on) the body.
        request.protocol.force_close()
        return response

    middleware.body_deadline = seconds  # type: ignore[attr-defined]
    return middleware


def application(middlewares: Iterable[Any] = (), *,
                body_deadline_s: float = BODY_DEADLINE_S,
                client_max_size: int = MAX_BODY_BYTES) -> web.Application:
    """An aiohttp app with the body deadline in front of `middlewares`."""
    return web.Application(middlewares=[body_deadline(body_deadline_s), *middlewares],
                           client_max_size=client_max_size)


def runner(app: web.Application, *, shutdown_timeout: float = 10.0,
           keepalive_timeout: float = KEEPALIVE_TIMEOUT_S) -> web.AppRunner:
    """The runner of every server: no aiohttp access log (our summary line replaces
    it), the keep-alive timeout, and a bounded drain on shutdown."""
    return web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout,
                         keepalive_timeout=keepalive_timeout)


def hardened(app: web.Application) -> bool:
    """Whether `app` was built by `application` (tests check every server's app)."""
    return any(getattr(m, "body_deadline", None) for m in app.middlewares)
