"""The query API (aiohttp): who is in a segment now, and a contact's segments.

    GET /accounts/{account_id}/segments                segments: rule, member count, status
    GET /accounts/{account_id}/segments/{segment_id}   rule, member count and status
    PUT|DELETE /accounts/{account_id}/segments/{segment_id}   (`serving.rules_api`)
    GET /accounts/{account_id}/segments/{segment_id}/members?cursor=&limit=
    GET /accounts/{account_id}/contacts/{email}/segments
    GET /segments?account_id=                          every account's (admin only)
    GET /healthz, GET /metrics, and the web page (`serving.web`)

Every route but `/healthz`, `/metrics` and the page's assets needs a bearer token
(`common.auth`); a route names its account in the path, and an account the token does
not allow is answered 404 exactly as an unknown segment is. Errors are JSON
`{"error": "..."}` with 400 for bad parameters. Answers come from Redis only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from common.auth import principal
from common.emails import normalize_email
from common.http import Handler, json_response, log_request, route_of
from common.ids import ID_RULE, valid_id
from serving.change_feed import ChangeFeed
from serving.erasure import ForgetSent
from serving.errors import ServingError
from serving.metrics import CONTENT_TYPE_LATEST, ServingMetrics
from serving.read_model_query import BadCursor, ReadModelReader, Segment, decode_cursor
from serving.status_table import StatusTable

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

READER = web.AppKey("reader", ReadModelReader)
METRICS = web.AppKey("metrics", ServingMetrics)
FEED = web.AppKey("feed", ChangeFeed)
REDIS: web.AppKey[Any] = web.AppKey("redis")
STATUS = web.AppKey("status", StatusTable)
#: (account_id, email) -> the erasure requested (`serving.erasure.forget`).
ERASE: web.AppKey[Callable[[str, str], Awaitable[ForgetSent]]] = web.AppKey("erase")

class ApiError(ServingError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON errors, one log line and the metrics of every request."""
    started = time.perf_counter()
    route = route_of(request)
    metrics = request.app[METRICS]
    try:
        response = await handler(request)
    except ApiError as exc:
        response = json_response({"error": exc.message}, exc.status)
    except web.HTTPException as exc:
        response = json_response({"error": exc.reason}, exc.status)
    except RedisError:
        log.exception("%s %s: Redis failed", request.method, route)
        response = json_response({"error": "the read model is unavailable"}, 503)
    elapsed = time.perf_counter() - started
    metrics.requests.labels(route=route, status=str(response.status)).inc()
    if route != "/events":
        metrics.request_seconds.labels(route=route).observe(elapsed)
    # The route template, not the path: paths carry contacts' emails.
    log_request(log, request.method, route, response.status, elapsed)
    return response


def id_param(value: str, name: str) -> str:
    if not valid_id(value):
        raise ApiError(400, f"{name} must be {ID_RULE} (got {value!r})")
    return value


def account_param(request: web.Request) -> str | None:
    raw = request.query.get("account_id", "")
    return id_param(raw, "account_id") if raw else None


def limit_param(request: web.Request) -> int:
    raw = request.query.get("limit", "")
    if not raw:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIMIT:
        raise ApiError(400, f"limit must be an integer from 1 to {MAX_LIMIT} (got {raw!r})")
    return limit


def cursor_param(request: web.Request) -> str | None:
    raw = request.query.get("cursor", "")
    if not raw:
        return None
    try:
        return decode_cursor(raw)
    except BadCursor as exc:
        raise ApiError(400, f"{exc} (got {raw!r})") from None


def path_account(request: web.Request) -> str:
    """The path's account; 404 (as for an unknown one) when the token does not allow it."""
    account_id = id_param(request.match_info["account_id"], "account_id")
    if not principal(request).may(account_id):
        raise ApiError(404, f"account {account_id!r} not found")
    return account_id


def not_found(account_id: str, segment_id: str) -> ApiError:
    return ApiError(404, f"segment {segment_id!r} not found in account {account_id!r}")


async def path_segment(request: web.Request) -> tuple[str, str]:
    """(account, segment) of the path; 404 when unknown or not the caller's."""
    segment_id = id_param(request.match_info["segment_id"], "segment_id")
    account_id = id_param(request.match_info["account_id"], "account_id")
    if not principal(request).may(account_id):
        raise not_found(account_id, segment_id)
    if await request.app[READER].resolve_account(segment_id, account_id) is None:
        raise not_found(account_id, segment_id)
    return account_id, segment_id


def segment_doc(request: web.Request, segment: Segment) -> dict[str, Any]:
    """The segment's answer: the read model's, and `status` (`serving.status_table`)."""
    doc = segment.to_dict()
    rule = segment.rule or {}
    version = rule.get("version", 1) if segment.rule is not None else None
    doc["status"] = request.app[STATUS].status(segment.account_id, segment.segment_id,
                                               version if isinstance(version, int) else None)
    return doc


async def _segments_doc(request: web.Request, account_id: str | None) -> web.Response:
    """`seq` (read first) marks what this snapshot includes for sure."""
    reader = request.app[READER]
    seq = await reader.last_seq()
    segments = await reader.segments(account_id)
    return json_response({"segments": [segment_doc(request, s) for s in segments],
                          "seq": seq})


async def list_all_segments(request: web.Request) -> web.Response:
    """Every account's segments (or one's, `?account_id=`): the admin's view only."""
    if not principal(request).admin:
        raise ApiError(403, "listing every account's segments needs the segments:admin scope; "
                            "use /accounts/{account_id}/segments")
    return await _segments_doc(request, account_param(request))


async def list_segments(request: web.Request) -> web.Response:
    return await _segments_doc(request, path_account(request))


async def get_segment(request: web.Request) -> web.Response:
    account_id, segment_id = await path_segment(request)
    segment = await request.app[READER].segment(account_id, segment_id)
    if segment is None:  # deleted between the two reads
        raise not_found(account_id, segment_id)
    return json_response(segment_doc(request, segment))


async def get_members(request: web.Request) -> web.Response:
    limit = limit_param(request)
    after = cursor_param(request)
    account_id, segment_id = await path_segment(request)
    page = await request.app[READER].members_page(account_id, segment_id, after, limit)
    return json_response(page.to_dict())


async def get_contact_segments(request: web.Request) -> web.Response:
    account_id = path_account(request)
    raw = request.match_info["email"]
    email = normalize_email(raw)
    if email is None:
        # Not echoed: it may hold control characters, and it names a person.
        raise ApiError(400, "email must be an email address")
    segments = await request.app[READER].contact_segments(account_id, email)
    return json_response({"account_id": account_id, "email": email, "segments": segments})


async def erase_contact(request: web.Request) -> web.Response:
    """`DELETE /accounts/{account_id}/contacts/{email}`: erase one person (README,
    "Privacy"); the account's own token or the admin's. 202: the erasure record is on
    every worker partition's control topic; the workers apply it in order."""
    account_id = path_account(request)
    email = normalize_email(request.match_info["email"])
    if email is None:
        raise ApiError(400, "email must be an email address")
    sent = await request.app[ERASE](account_id, email)
    return json_response({"account_id": account_id, "erasure": "requested",
                          "partitions": sent.partitions}, 202)


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[REDIS].ping()
    except Exception:  # any failure means "not ready", reported, not raised
        # No error text: it would name hosts to whoever can reach this open route.
        return json_response({"status": "unavailable", "redis": "down"}, 503)
    return json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
