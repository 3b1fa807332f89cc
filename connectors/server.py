"""The connector's HTTP servers: app factories, per-request summary log, health, metrics.

Two listeners. `create_app` is the public one (`CONNECTOR_PORT`): it serves only
`POST /webhooks/stripe/{connection_id}`, the one address Stripe must reach, and owns the
Redis client, the Kafka sink and the connections API. `create_admin_app` is the internal
one (`CONNECTOR_ADMIN_PORT`), sharing those: the connection API (bearer tokens,
`common.auth`), `/healthz` and `/metrics`. The sink connects in the background, so the
server comes up and answers 503 to webhooks (Stripe retries) while Kafka is away, rather
than refusing to start. `serve` runs both until SIGTERM/SIGINT and then drains in-flight
requests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from common.auth import TokenVerifier, auth_middleware, resolve_verifier
from common.http import Handler, application, expect_handler, log_request, route_of, runner
from common.redis_client import blocking_pool_client
from common.settings import Settings
from connectors.connections import ConnectionsApi
from connectors.metrics import CONTENT_TYPE_LATEST, ConnectorMetrics
from connectors.quotas import ConnectionQuotas, QuotaLimits
from connectors.reconcile import ReconcileOptions, Reconciler, SeenEvents
from connectors.secrets import SecretBox, resolve_secret_key
from connectors.sink import EventSink
from connectors.store import ConnectionStore
from connectors.stripe_account import RegistrationMode, guard_stripe_logging
from connectors.supervised_sink import SupervisedSink, kafka_answers
from connectors.webhooks import LOG_FIELDS, WebhookReceiver

if TYPE_CHECKING:
    from connectors.backfill import BackfillOptions

access_log = logging.getLogger(f"{__name__}.access")
log = logging.getLogger(__name__)

METRICS: web.AppKey[ConnectorMetrics] = web.AppKey("metrics", ConnectorMetrics)
STORE: web.AppKey[ConnectionStore] = web.AppKey("store", ConnectionStore)
SINK: web.AppKey[SupervisedSink] = web.AppKey("sink", SupervisedSink)
RECONCILER: web.AppKey[Reconciler] = web.AppKey("reconciler", Reconciler)
CONNECTIONS: web.AppKey[ConnectionsApi] = web.AppKey("connections", ConnectionsApi)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
#: Routes of the admin port answered without a token: they carry no account's data.
OPEN_ROUTES = ("/healthz", "/metrics")

def summary_middleware(metrics: ConnectorMetrics) -> Any:
    """One summary log line per request (`common.logs` fields), built from chosen
    fields only: never headers or bodies."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        error: str | None = None
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            if status in (404, 405):
                # Same body as an unknown connection: the answer reveals nothing.
                return web.Response(status=status, body=orjson.dumps(
                    {"error": "not found" if status == 404 else "method not allowed"}),
                    content_type="application/json")
            raise
        except Exception as exc:
            error = type(exc).__name__
            # The route, not the path: a path may name a person or a connection.
            log.error("unhandled %s on %s %s", error, request.method, route_of(request),
                      exc_info=True)
            return web.Response(status=500, body=b'{"error":"internal error"}',
                                content_type="application/json")
        finally:
            route = route_of(request)
            metrics.http_requests.labels(route, str(status)).inc()
            if status >= 500:
                metrics.http_server_errors.labels(route).inc()
            line: dict[str, Any] = dict(request.get(LOG_FIELDS) or {})
            if error:
                line["error"] = error
            log_request(access_log, request.method, route, status,
                        time.perf_counter() - started, **line)

    return middleware


async def healthz(request: web.Request) -> web.Response:
    """200 when Redis and Kafka both answer now, else 503 naming what does not."""
    store = request.app[STORE]
    sink = request.app[SINK]
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(store.redis.ping(), 1.0)
        checks["redis"] = "ok"
    except Exception:
        checks["redis"] = "down"
    answers = await kafka_answers(sink.settings, 2.0)
    checks["kafka"] = "ok" if answers else "down"
    checks["producer"] = "connected" if sink.connected else "connecting"
    checks["connections"] = "loaded" if store.loaded else "loading"
    healthy = checks["redis"] == "ok" and checks["kafka"] == "ok"
    return web.Response(status=200 if healthy else 503, body=orjson.dumps(checks),
                        content_type="application/json")


async def metrics_view(request: web.Request) -> web.Response:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(
    settings: Settings,
    *,
    registration: RegistrationMode = "stripe",
    publish_timeout: float = 5.0,
    prepare_kafka: Callable[[], Awaitable[object]] | None = None,
    start_backfill: bool = True,
    sink: SupervisedSink | None = None,
    secrets_cache_ttl: float = 5.0,
    max_in_flight: int = 512,
    backfill_options: BackfillOptions | None = None,
    limits: QuotaLimits | None = None,
    check_health: bool = True,
    reconcile: bool = True,
    reconcile_options: ReconcileOptions | None = None,
) -> web.Application:
    """The public app (webhooks only); `prepare_kafka` (e.g. ensure_topics) runs before
    the producer. `create_admin_app` adds the internal listener's app over the same state.

    `backfill_options` tunes the backfills it starts, `limits` the quotas of
    `POST /connections` (both default: from the environment). `check_health` runs the
    periodic connection health checker (`connectors.health`), `reconcile` the gap repair
    (`connectors.reconcile`, at start and every `reconcile_options.interval_s`).
    """
    guard_stripe_logging()
    metrics = ConnectorMetrics()
    box = SecretBox(resolve_secret_key(settings))
    # Blocking pool: under a burst, requests wait briefly for a connection instead of
    # failing with "Too many connections" (the default pool's behaviour at 100).
    redis = blocking_pool_client(settings, 64, timeout=5, socket_timeout=5)
    # The store follows segments.connections (its system of record); Redis is its cache.
    store = ConnectionStore(redis, box, prefix=settings.topic_prefix, cache_ttl=secrets_cache_ttl,
                            settings=settings)
    if sink is None:
        sink = SupervisedSink(settings, timeout=publish_timeout,
                              on_state=lambda up: metrics.producer_up.set(1 if up else 0),
                              prepare=prepare_kafka)
    event_sink: EventSink = sink
    reconcile_options = reconcile_options or ReconcileOptions.from_env()
    seen = SeenEvents(redis, settings.topic_prefix, overlap_s=reconcile_options.settle_s)
    receiver = WebhookReceiver(store, event_sink, metrics, max_in_flight=max_in_flight,
                               seen=seen)
    async def exists(connection_id: str) -> bool:
        return await store.get(connection_id) is not None

    quotas = ConnectionQuotas(redis, settings.topic_prefix,
                              QuotaLimits.from_env(os.environ) if limits is None else limits,
                              exists)
    connections = ConnectionsApi(settings, store, event_sink, metrics,
                                 registration=registration, start_backfill=start_backfill,
                                 backfill_options=backfill_options, quotas=quotas)

    app = application([summary_middleware(metrics)])
    app[METRICS], app[STORE], app[SINK], app[CONNECTIONS] = metrics, store, sink, connections
    app[SETTINGS] = settings
    app[RECONCILER] = Reconciler(settings, store, event_sink, seen, reconcile_options)
    connections.seen = seen
    app.router.add_post("/webhooks/stripe/{connection_id}", receiver.handle,
                        expect_handler=expect_handler)

    async def lifecycle(app: web.Application) -> Any:
        await app[STORE].start()
        await app[SINK].start()
        if start_backfill:
            app[CONNECTIONS].start_resuming()
        if check_health:
            app[CONNECTIONS].health.start()
        if reconcile:
            app[RECONCILER].start()
        yield
        await app[RECONCILER].stop()
        await app[CONNECTIONS].close()
        await app[SINK].stop()
        await app[STORE].stop()
        await app[STORE].redis.aclose()

    app.cleanup_ctx.append(lifecycle)
    return app


def create_admin_app(app: web.Application,
                     verifier: TokenVerifier | None = None) -> web.Application:
    """The internal listener's app over the state of `app` (from `create_app`): the
    connection API behind bearer tokens, `/healthz` and `/metrics`.

    `verifier` defaults to the configured keys (`common.auth.resolve_verifier`), which
    raises `AuthConfigError` in production when none is configured.
    """
    if verifier is None:
        verifier = resolve_verifier(app[SETTINGS])
    metrics, connections = app[METRICS], app[CONNECTIONS]
    admin = application([summary_middleware(metrics), auth_middleware(verifier, OPEN_ROUTES)])
    admin[METRICS], admin[STORE], admin[SINK] = metrics, app[STORE], app[SINK]
    admin[CONNECTIONS], admin[SETTINGS] = connections, app[SETTINGS]
    routes = admin.router
    routes.add_post("/connections", connections.create, expect_handler=expect_handler)
    routes.add_get("/connections/{connection_id}", connections.show, expect_handler=expect_handler)
    routes.add_delete("/connections/{connection_id}", connections.delete,
                      expect_handler=expect_handler)
    routes.add_get("/healthz", healthz, expect_handler=expect_handler)
    routes.add_get("/metrics", metrics_view, expect_handler=expect_handler)
    return admin


async def serve(app: web.Application, host: str, port: int, *,
                admin: web.Application | None = None, admin_host: str = "127.0.0.1",
                admin_port: int = 8082, stop: asyncio.Event | None = None,
                shutdown_timeout: float = 10.0) -> None:
    """Run the public `app` on host:port and `admin` (when given) on admin_host:admin_port
    until SIGTERM/SIGINT (or `stop` is set), then drain and clean up, admin first: the
    public app owns the Redis client and the sink both use."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # access_log=None: the summary middleware writes the one line per request.
    runners = [runner(app, shutdown_timeout=shutdown_timeout)]
    if admin is not None:
        runners.append(runner(admin, shutdown_timeout=shutdown_timeout))
    started: list[web.AppRunner] = []
    try:
        for each, (bind_host, bind_port) in zip(runners, ((host, port), (admin_host, admin_port)),
                                                strict=False):
            await each.setup()
            started.append(each)
            await web.TCPSite(each, bind_host, bind_port).start()
        log.info("connector: webhooks on http://%s:%d", host, port)
        if admin is not None:
            log.info("connector: connection API, /healthz, /metrics on http://%s:%d",
                     admin_host, admin_port)
        await stop.wait()
        log.info("shutting down: draining in-flight requests")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        for each in reversed(started):
            await each.cleanup()
