"""Preview and explain: the query API's routes answered from the workers' own state.

    POST /accounts/{account_id}/segments/preview               a rule, before saving it
    GET  /accounts/{account_id}/segments/{segment_id}/members/{email}    why (not) a member

Kafka Streams' interactive queries: every worker serves the partitions it owns
(`stream.query_server`) and advertises them in Redis (`owner_key`, with a TTL). A
preview asks the owner of every partition at once (one request per worker, naming its
partitions), each evaluates the rule over its contacts' held facts at the same
`as_of`, and the answers are added up; an explanation asks the one owner of the
contact's partition (murmur2 of the contact key, as the producers partition facts).
If any partition has no advertised owner, its owner cannot be reached, or it answers
"retry" (restoring, moving), the answer is 503 with `Retry-After`: never a count from
part of the partitions. The caller's bearer token is forwarded, so a worker checks the
account as the API does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from common.http import expect_handler, json_response
from rules import FieldError, RuleError, parse_rule
from serving.api import READER, ApiError, path_account, path_segment
from stream.changes import iso
from stream.facts import contact_key, normalize_email
from stream.partitioning import partition_for
from stream.query import Preview, merge
from stream.query_server import owner_key

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1
#: Longest a worker may take to answer its part.
WORKER_TIMEOUT_S = 5.0
PREVIEW_ID = "preview"


class Fanout:
    """Where each partition is served, and one HTTP client to ask."""

    def __init__(self, redis: Any, prefix: str, partitions: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.partitions = partitions
        self._http: aiohttp.ClientSession | None = None

    def http(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=WORKER_TIMEOUT_S),
                connector=aiohttp.TCPConnector(limit=64))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def owners(self, partitions: list[int]) -> dict[int, str | None]:
        keys = [owner_key(self.prefix, partition) for partition in partitions]
        raw = await self.redis.mget(keys)
        found: dict[int, str | None] = {}
        for partition, value in zip(partitions, raw, strict=True):
            try:
                found[partition] = str(orjson.loads(value)["url"]) if value else None
            except (orjson.JSONDecodeError, KeyError, TypeError):
                found[partition] = None
        return found

    async def ask(self, url: str, path: str, body: dict[str, Any],
                  authorization: str) -> dict[str, Any] | None:
        """The worker's JSON answer; None when it cannot be had (down, slow, refused)."""
        try:
            async with self.http().post(url + path, data=orjson.dumps(body), headers={
                    "Authorization": authorization,
                    "Content-Type": "application/json"}) as resp:
                if resp.status != 200:
                    log.warning("worker %s answered %d to %s", url, resp.status, path)
                    return None
                answer = orjson.loads(await resp.read())
                return answer if isinstance(answer, dict) else None
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            log.warning("worker %s unreachable for %s: %s", url, path, type(exc).__name__)
            return None


FANOUT = web.AppKey("fanout", Fanout)


def add_routes(app: web.Application, redis: Any, prefix: str, partitions: int) -> None:
    app[FANOUT] = Fanout(redis, prefix, partitions)

    async def close(app: web.Application) -> None:
        await app[FANOUT].close()

    app.on_cleanup.append(close)
    app.router.add_post("/accounts/{account_id}/segments/preview", preview,
                        expect_handler=expect_handler)
    app.router.add_get("/accounts/{account_id}/segments/{segment_id}/members/{email}",
                       explain, expect_handler=expect_handler)


def retry(reason: str) -> web.Response:
    response = json_response({"error": reason, "retry": True}, 503)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def invalid(errors: list[FieldError]) -> web.Response:
    """422 listing every problem; `FieldError.path` is already a JSON Pointer."""
    return json_response({"errors": [e.to_dict() for e in errors]}, 422)


async def preview(request: web.Request) -> web.Response:
    account_id = path_account(request)
    try:
        doc = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return invalid([FieldError("", "the body must be a JSON rule")])
    if not isinstance(doc, dict):
        return invalid([FieldError("", "the rule must be a JSON object")])
    doc = dict(doc)
    if doc.setdefault("account_id", account_id) != account_id:
        return invalid([FieldError("/account_id", f"must be {account_id!r}, the path's")])
    doc.setdefault("id", PREVIEW_ID)
    doc.setdefault("name", doc["id"])
    doc.pop("version", None)
    try:
        rule = parse_rule(doc)
    except RuleError as exc:
        return invalid(exc.errors)
    fanout = request.app[FANOUT]
    as_of = int(time.time())
    partitions = list(range(fanout.partitions))
    owners = await fanout.owners(partitions)
    missing = sorted(partition for partition, url in owners.items() if url is None)
    if missing:
        return retry(f"partitions {missing} have no owner serving queries right now")
    by_url: dict[str, list[int]] = defaultdict(list)
    for partition, url in owners.items():
        by_url[str(url)].append(partition)
    body = {"account_id": account_id, "rule": rule.to_dict(), "as_of": as_of}
    authorization = request.headers.get("Authorization", "")
    answers = await asyncio.gather(*(
        fanout.ask(url, "/query/preview", {**body, "partitions": owned}, authorization)
        for url, owned in by_url.items()))
    parts: list[Preview] = []
    for (_, owned), answer in zip(by_url.items(), answers, strict=True):
        got = (answer or {}).get("partitions") or {}
        for partition in owned:
            part = got.get(str(partition))
            if not isinstance(part, dict):
                return retry(f"partition {partition} is restoring or moving")
            parts.append(Preview(int(part["count"]), list(part["sample"])))
    merged = merge(parts)
    return json_response({"count": merged.count, "sample": merged.sample,
                          "as_of": iso(as_of)})


async def explain(request: web.Request) -> web.Response:
    account_id, segment_id = await path_segment(request)
    raw = request.match_info["email"]
    email = normalize_email(raw)
    if email is None:
        raise ApiError(400, f"email must be an email address (got {raw!r})")
    fanout = request.app[FANOUT]
    partition = partition_for(contact_key(account_id, email), fanout.partitions)
    url = (await fanout.owners([partition]))[partition]
    if url is None:
        return retry(f"partition {partition} has no owner serving queries right now")
    answer = await fanout.ask(url, "/query/explain", {
        "account_id": account_id, "segment_id": segment_id, "email": email,
        "as_of": int(time.time())}, request.headers.get("Authorization", ""))
    if answer is None or answer.get("status") != "ok":
        # "unknown_segment": the read model has the rule, that partition not yet.
        return retry(f"partition {partition} is restoring, moving or catching up")
    since = None
    if answer["member"]:
        for segment in await request.app[READER].contact_segments(account_id, email):
            if segment["segment_id"] == segment_id:
                since = segment["since"]
    return json_response({"account_id": account_id, "segment_id": segment_id,
                          "email": email, "member": answer["member"], "since": since,
                          "facts": answer["facts"],
                          "next_change_at": answer["next_change_at"]})
