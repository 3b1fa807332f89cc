"""The web page of the query API and its live feed.

    GET /                 the page (serving/static/index.html; no build step, no CDN)
    GET /static/{name}    its scripts and style sheet, and `schema.json`: the rule's JSON
                          Schema (`rules/schema.json`, read-only), which drives the page's
                          rule builder
    GET /events?account_id=   server-sent events: `change` (a member joined or left,
                          with the segment's new count) and `rule` (a rule was created,
                          changed or deleted); a new stream starts with the latest
                          changes this process saw (each event's `seq` tells them apart)

The page and its assets carry no data and need no token; the page reads a bearer token
from its address's fragment (`#token=...`, never sent to a server), keeps it in memory
only and sends it with its data calls and its `/events` stream. `/events` carries only
the accounts the token allows (`?account_id=` narrows it to one; another account: 404).
"""

from __future__ import annotations

import asyncio
import logging
from importlib import resources

import orjson
from aiohttp import web

from common.auth import principal
from common.http import expect_handler, json_response
from rules.schema import build_schema as rule_schema
from serving.api import FEED, ApiError, account_param
from serving.change_feed import ChangeFeed, Event, FeedFull, Subscription

log = logging.getLogger(__name__)

#: Seconds a client refused by a full live feed is asked to wait.
RETRY_AFTER_S = 5
#: Seconds between keep-alive comments on an idle stream (proxies drop silent ones).
HEARTBEAT_SECONDS = 15.0

_STATIC = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "builder.js": "text/javascript",
    "style.css": "text/css",
    "schema.json": "application/json",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
STATIC_FILES = web.AppKey("static_files", dict)


def _load_static() -> dict[str, bytes]:
    """The page's files, and the rule schema built from the vocabulary the parser uses."""
    folder = resources.files("serving") / "static"
    files = {name: (folder / name).read_bytes() for name in _STATIC if name != "schema.json"}
    files["schema.json"] = orjson.dumps(rule_schema(), option=orjson.OPT_INDENT_2)
    return files


def _static_response(request: web.Request, name: str) -> web.Response:
    return web.Response(
        body=request.app[STATIC_FILES][name],
        content_type=_STATIC[name],
        charset="utf-8",
        headers={**_SECURITY_HEADERS, "Cache-Control": "no-cache"},
    )


async def index(request: web.Request) -> web.Response:
    return _static_response(request, "index.html")


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _STATIC or name == "index.html":
        raise web.HTTPNotFound(reason=f"no static file {name!r}")
    return _static_response(request, name)


def sse_message(event: Event) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (str(event["type"]).encode(), orjson.dumps(event))


async def events(request: web.Request) -> web.StreamResponse:
    account_id = account_param(request)
    caller = principal(request)
    if account_id is not None and not caller.may(account_id):
        raise ApiError(404, f"account {account_id!r} not found")
    accounts = frozenset({account_id}) if account_id is not None else caller.only
    feed = request.app[FEED]
    try:
        with feed.subscribe(history=True, accounts=accounts) as subscription:
            return await _stream(request, feed, subscription)
    except FeedFull:
        log.warning("live feed full: %d streams open", feed.max_subscribers)
        answer = json_response({"error": "too many open streams; retry later"}, 503)
        answer.headers["Retry-After"] = str(RETRY_AFTER_S)
        return answer


async def _stream(request: web.Request, feed: ChangeFeed, subscription: Subscription,
                  ) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)

    async def write(data: bytes) -> None:
        # A client that does not take a write in time is dropped: the data would
        # otherwise wait in this process's buffers for as long as it likes.
        await asyncio.wait_for(response.write(data), feed.write_timeout)

    try:
        await write(b"retry: 2000\n: connected\n\n")
        while True:
            batch = await subscription.next_events(HEARTBEAT_SECONDS)
            if batch is None:  # closed: the client was too slow, or shutdown
                break
            if not batch:
                await write(b": keep-alive\n\n")
                continue
            # Only the stream's accounts were queued (`ChangeFeed.dispatch`).
            await write(b"".join(sse_message(e) for e in batch))
    except ConnectionResetError:  # the browser went away
        pass
    except TimeoutError:
        feed.drop(subscription)
        if request.transport is not None:
            request.transport.abort()  # nothing more is sent to this client
    return response


async def _close_streams(app: web.Application) -> None:
    app[FEED].close()


def add_routes(app: web.Application) -> None:
    app[STATIC_FILES] = _load_static()
    app.router.add_get("/", index, expect_handler=expect_handler)
    app.router.add_get("/static/{name}", static, expect_handler=expect_handler)
    app.router.add_get("/events", events, expect_handler=expect_handler)
    app.on_shutdown.append(_close_streams)
