"""`segments connector`: the webhook and connection HTTP servers.

Two listeners: the public one (`CONNECTOR_PORT`) serves only the webhook route, the one
address Stripe must reach; the internal one (`CONNECTOR_ADMIN_PORT`) serves the
connection API (bearer tokens), `/healthz` and `/metrics`. Both bind 127.0.0.1 unless
told otherwise: exposing the webhook port (behind a TLS-terminating proxy) is a decision
the operator makes with `--host`, not a default.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from common.settings import Settings

REGISTRATION_MODES = ("stripe", "localstripe")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "connector",
        help="run the Stripe webhook receiver and the /connections API",
        description=(
            "Serves POST /webhooks/stripe/{connection_id} on CONNECTOR_PORT (public) and "
            "POST/GET/DELETE /connections (bearer token), GET /healthz and GET /metrics on "
            "CONNECTOR_ADMIN_PORT (internal). Declares the Kafka topics first and keeps "
            "answering 503 to webhooks while Kafka is unreachable, so Stripe retries. "
            "SEGMENTS_WEBHOOK_REGISTRATION=localstripe (tests and the demo only) registers "
            "webhooks through the localstripe emulator instead of /v1/webhook_endpoints."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=None,
                        help="webhook port (default CONNECTOR_PORT, 8080)")
    parser.add_argument("--admin-host", default="127.0.0.1",
                        help="interface of the internal port (default 127.0.0.1)")
    parser.add_argument("--admin-port", type=int, default=None,
                        help="internal port (default CONNECTOR_ADMIN_PORT, 8082)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from common.auth import AuthConfigError
    from common.topics import CONNECTOR_WRITES, ensure_topics, specs_named
    from connectors.secrets import SecretKeyError
    from connectors.server import create_admin_app, create_app, serve

    settings = Settings.from_env()
    mode = os.environ.get("SEGMENTS_WEBHOOK_REGISTRATION", "stripe").strip() or "stripe"
    if mode not in REGISTRATION_MODES:
        print(f"segments connector: SEGMENTS_WEBHOOK_REGISTRATION must be one of "
              f"{', '.join(REGISTRATION_MODES)}", file=sys.stderr)
        return 2
    port = args.port if args.port is not None else settings.connector_port
    admin_port = args.admin_port if args.admin_port is not None else settings.connector_admin_port

    async def main() -> None:
        app = create_app(
            settings,
            registration=mode,  # type: ignore[arg-type]  # checked against the list above
            prepare_kafka=lambda: ensure_topics(settings, specs_named(*CONNECTOR_WRITES)),
        )
        await serve(app, args.host, port, admin=create_admin_app(app),
                    admin_host=args.admin_host, admin_port=admin_port)

    try:
        asyncio.run(main())
    except (SecretKeyError, AuthConfigError) as exc:
        print(f"segments connector: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"segments connector: cannot listen on {args.host}:{port} or "
              f"{args.admin_host}:{admin_port}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0
