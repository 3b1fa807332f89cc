"""What both HTTP servers (the connector and the query API) do the same way.

JSON bodies, the route template of a request (what logs and metrics name: the path may
carry an email), `Expect` handling that cannot fail, and the one summary log line per
request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
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
