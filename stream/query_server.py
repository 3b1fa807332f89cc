"""A worker's query endpoint: read-only queries over the partitions it owns, and where.

Kafka Streams' interactive queries, for this runtime:

- **Serving.** An aiohttp server (default 127.0.0.1, any free port; `segments worker
  --query-host/--query-port`) answers `POST /query/preview` and `POST /query/explain`
  from the in-memory state of its partitions (`stream.query`). Callers present the same
  bearer tokens as the query API (the API forwards its caller's token), so a worker
  answers an account only to whoever may see it, and there is no second secret to
  deploy. A partition this worker does not own, or owns but is still restoring (its
  state is not loaded, or its task has not started) answers `null`: "retry", never a
  count from partial state.
- **Advertising.** Every `REFRESH_S` each worker writes, for each partition it serves,
  `owner_key(prefix, partition)` = `{"url", "generation", "worker"}` into Redis with a TTL of
  `TTL_S`; a write never replaces an entry of a newer consumer-group generation (a
  zombie cannot take a partition back), and a partition given up is removed only if
  the entry is still this worker's. A crashed worker's entries expire; until then
  requests to it fail, and the API answers "retry" (503) for those partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from common.auth import TokenVerifier, auth_middleware, principal
from common.http import json_response
from common.settings import Settings
from rules import RuleError, parse_rule
from stream.app import StreamApp
from stream.facts import contact_key, normalize_email
from stream.partitioning import partition_for
from stream.query import SAMPLE_SIZE, explain, preview

log = logging.getLogger(__name__)

REFRESH_S = 1.0
TTL_S = 10
#: Set if no entry of a newer generation is there; ARGV: value, generation, ttl.
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, doc = pcall(cjson.decode, cur)
  if ok and type(doc) == 'table' and tonumber(doc['generation'])
     and tonumber(doc['generation']) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))
return 1
"""
#: Delete if still ours; ARGV: our worker id.
_RELEASE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, doc = pcall(cjson.decode, cur)
  if ok and type(doc) == 'table' and doc['worker'] == ARGV[1] then
    return redis.call('DEL', KEYS[1])
  end
end
return 0
"""


def owner_key(prefix: str, partition: int) -> str:
    """The Redis key naming who serves queries of partition `partition`."""
    return f"{prefix}segments:owner:{partition}"


class QueryServer:
    """Serve and advertise queries over `app`'s partitions (see the module's doc)."""

    def __init__(self, app: StreamApp, settings: Settings, verifier: TokenVerifier,
                 redis: Any, *, host: str = "127.0.0.1", port: int = 0,
                 advertised_host: str | None = None) -> None:
        self.stream = app
        self.settings = settings
        self.redis = redis
        self.host, self.port = host, port
        self.advertised_host = advertised_host or (
            socket.gethostname() if host in ("0.0.0.0", "::", "") else host)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.web = web.Application(middlewares=[auth_middleware(verifier, ("/healthz",))])
        self.web.router.add_post("/query/preview", self._preview)
        self.web.router.add_post("/query/explain", self._explain)
        self.web.router.add_get("/healthz", self._healthz)
        self._runner: web.AppRunner | None = None
        self._advertiser: asyncio.Task[None] | None = None
        self._advertised: set[int] = set()
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)

    @property
    def url(self) -> str:
        assert self._runner is not None, "not started"
        port = self._runner.addresses[0][1]
        return f"http://{self.advertised_host}:{port}"

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        self._runner = web.AppRunner(self.web, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self._advertiser = asyncio.create_task(self._advertise(), name="query-advertiser")
        log.info("worker queries on %s", self.url)

    async def stop(self) -> None:
        if self._advertiser is not None:
            self._advertiser.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._advertiser
            self._advertiser = None
        with contextlib.suppress(Exception):  # expiry cleans up if Redis is gone
            await self._withdraw(set(self._advertised))
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- which partitions ------------------------------------------------------------

    def ready(self, partition: int) -> bool:
        """Owned, state loaded and its task running: its answers are exact."""
        app = self.stream
        return (app.failed is None and partition in app.assigned()
                and partition in app.pipeline.partitions)

    def generation(self) -> int:
        consumer = self.stream.runtime.consumer
        coordinator = getattr(consumer, "_coordinator", None)
        return int(getattr(coordinator, "generation", -1) or -1)

    async def _advertise(self) -> None:
        while True:
            try:
                await self.advertise_once()
            except Exception as exc:  # Redis away: queries answer retry, the stream runs on
                log.warning("advertising query partitions failed: %s", type(exc).__name__)
            await asyncio.sleep(REFRESH_S)

    async def advertise_once(self) -> None:
        serving = {partition for partition in self.stream.assigned() if self.ready(partition)}
        await self._withdraw(self._advertised - serving)
        value = orjson.dumps({"url": self.url, "generation": self.generation(),
                              "worker": self.worker_id, "at": int(time.time())})
        prefix = self.settings.topic_prefix
        for partition in sorted(serving):
            await self._claim(keys=[owner_key(prefix, partition)],
                              args=[value, self.generation(), TTL_S])
        self._advertised = serving

    async def _withdraw(self, partitions: set[int]) -> None:
        prefix = self.settings.topic_prefix
        for partition in sorted(partitions):
            await self._release(keys=[owner_key(prefix, partition)], args=[self.worker_id])
            self._advertised.discard(partition)

    # -- queries -----------------------------------------------------------------------

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            doc = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise web.HTTPBadRequest(text="body must be JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("account_id"), str) \
                or not isinstance(doc.get("as_of"), int):
            raise web.HTTPBadRequest(text="account_id and as_of are required")
        if not principal(request).may(doc["account_id"]):
            raise web.HTTPNotFound(text="unknown account")
        return doc

    async def _preview(self, request: web.Request) -> web.Response:
        doc = await self._body(request)
        rule_doc = doc.get("rule")
        if not isinstance(rule_doc, dict) or rule_doc.get("account_id") != doc["account_id"]:
            raise web.HTTPBadRequest(text="rule of the account is required")
        try:
            rule = parse_rule(rule_doc)
        except RuleError as exc:
            return json_response(exc.to_dict(), 422)
        sample_size = min(int(doc.get("sample_size", SAMPLE_SIZE)), SAMPLE_SIZE)
        answers: dict[str, Any] = {}
        pipeline = self.stream.pipeline
        for partition in doc.get("partitions") or ():
            if not isinstance(partition, int) or not self.ready(partition):
                answers[str(partition)] = None  # retry: not here, or not yet
                continue
            partition_state = pipeline.partitions[partition]
            contacts = pipeline.contacts.view(partition)
            answers[str(partition)] = preview(partition_state, contacts, rule, doc["as_of"],
                                              sample_size).to_dict()
        return json_response({"partitions": answers})

    async def _explain(self, request: web.Request) -> web.Response:
        doc = await self._body(request)
        email = normalize_email(doc.get("email"))
        segment_id = doc.get("segment_id")
        if email is None or not isinstance(segment_id, str):
            raise web.HTTPBadRequest(text="email and segment_id are required")
        account_id = doc["account_id"]
        key = contact_key(account_id, email)
        partition = partition_for(key, self.settings.partitions)
        if not self.ready(partition):
            return json_response({"status": "retry", "partition": partition})
        pipeline = self.stream.pipeline
        rule = pipeline.partitions[partition].rules.get(account_id, segment_id)
        if rule is None:
            return json_response({"status": "unknown_segment", "partition": partition})
        contact = pipeline.contacts.view(partition).get(key.decode())
        answer = explain(contact, rule, doc["as_of"])
        return json_response({"status": "ok", "partition": partition, "rule_version": rule.version,
                              **answer})

    async def _healthz(self, request: web.Request) -> web.Response:
        served = sorted(partition for partition in self.stream.assigned() if self.ready(partition))
        return json_response({"status": "ok", "partitions": served})
