"""`segments api`: the read model (Kafka → Redis) and the query API in one process."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from common.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "api",
        help="serve the query API and web page, keeping the Redis read model current",
        description=(
            "Consumes segments.membership and segments.rules into Redis and answers "
            "GET /accounts/{account}/segments[/{id}[/members]], "
            "/accounts/{account}/contacts/{email}/segments, /segments (admin), /events "
            "(bearer token), /healthz, /metrics and the web page / on API_PORT."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="address to bind (default 127.0.0.1; 0.0.0.0 to serve other machines)",
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: API_PORT)")
    parser.add_argument(
        "--no-read-model", dest="read_model", action="store_false",
        help="serve queries only; another process keeps the read model current",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from serving.server import serve

    settings = Settings.from_env()
    return asyncio.run(serve(settings, args.host, args.port, read_model=args.read_model))
