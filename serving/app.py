"""The query API's aiohttp application: the API's routes and the web page's, on one port.

Assembled here, above both, so the page (`serving.web`) may use the API's helpers while
the API knows nothing of the page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from common.auth import TokenVerifier, auth_middleware
from common.http import application, expect_handler
from common.settings import Settings
from serving import api, interactive, openapi, rules_api
from serving import web as page
from serving.change_feed import ChangeFeed
from serving.erasure import ForgetSent
from serving.metrics import ServingMetrics
from serving.read_model import Namespace
from serving.read_model_query import ReadModelReader
from serving.status_table import StatusTable

Eraser = Callable[[str, str], Awaitable[ForgetSent]]
#: Routes answered without a token: health, metrics and the page's assets carry no
#: account's data (the page's data calls and `/events` need the token).
OPEN_ROUTES = ("/healthz", "/metrics", "/", "/static/{name}")


def build_app(redis: Any, ns: Namespace, metrics_: ServingMetrics, feed: ChangeFeed,
              verifier: TokenVerifier, *, settings: Settings,
              status: StatusTable, erase: Eraser | None = None) -> web.Application:
    """The query API over the read model in `redis` (keys of `ns`), and its web page;
    rules are written to Kafka (`settings`), statuses come from `status`, preview
    and explain ask the workers serving the `settings.partitions` partitions, and
    `erase` serves `DELETE /accounts/{a}/contacts/{email}` (None: that route is absent)."""
    app = application([api.observe, auth_middleware(verifier, OPEN_ROUTES)])
    app[api.READER] = ReadModelReader(redis, ns)
    app[api.METRICS] = metrics_
    app[api.FEED] = feed
    app[api.REDIS] = redis
    for path, handler in (
        ("/segments", api.list_all_segments),
        ("/accounts/{account_id}/segments", api.list_segments),
        ("/accounts/{account_id}/segments/{segment_id}", api.get_segment),
        ("/accounts/{account_id}/segments/{segment_id}/members", api.get_members),
        ("/accounts/{account_id}/contacts/{email}/segments", api.get_contact_segments),
        ("/healthz", api.healthz),
        ("/metrics", api.metrics),
    ):
        app.router.add_get(path, handler, expect_handler=expect_handler)
    # Rules over HTTP (issue 17): writes, segment status, the OpenAPI document.
    app[api.STATUS] = status
    rules_api.add_routes(app, settings)
    app.router.add_get("/openapi.json", openapi.serve, expect_handler=expect_handler)
    # Answered from the workers' state, not the read model (`serving.interactive`).
    interactive.add_routes(app, redis, ns.prefix, settings.partitions)
    if erase is not None:
        app[api.ERASE] = erase
        app.router.add_delete("/accounts/{account_id}/contacts/{email}", api.erase_contact,
                              expect_handler=expect_handler)
    page.add_routes(app)
    return app
