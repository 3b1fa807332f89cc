"""The processes `segments demo` runs, in one place: start them, and stop all of them.

The connector (aiohttp app), the stream worker and the query API with its
read-model writer run in the demo's own event loop, exactly the code `segments
connector`, `segments worker` and `segments api` run; localstripe runs as a child
process on loopback. `stop()` undoes whatever `start_*` did, newest first, and never
raises, so an interrupted start still leaves nothing running.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from common.http import runner as http_runner
from common.settings import Settings
from connectors.backfill import BackfillOptions
from connectors.reconcile import ReconcileOptions
from connectors.server import SINK, STORE, create_admin_app, create_app
from segments.envelope_check import connector_connection_accounts
from segments.localstripe import LocalStripe
from segments.stack import StackError
from serving.server import ApiProcess
from stream.app import StreamOptions
from stream.app import create_app as create_worker

log = logging.getLogger(__name__)

__all__ = ["DemoServices", "usable_port"]


def usable_port(preferred: int, host: str = "127.0.0.1") -> int:
    """`preferred` if nothing listens there, else a free port the OS picks."""
    with socket.socket() as s:
        try:
            s.bind((host, preferred))
            return preferred
        except OSError:
            pass
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class DemoServices:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.localstripe: LocalStripe | None = None
        self.worker: Any = None
        self.api: Any = None
        self.connector_url = ""
        self.connector_admin_url = ""
        self.api_url = ""
        self._stops: list[tuple[str, Callable[[], Awaitable[None]]]] = []

    def start_localstripe(self) -> str:
        """Blocks about a second; call it from the main thread (see segments.localstripe)."""
        self.localstripe = LocalStripe()
        base = self.localstripe.start()
        server = self.localstripe

        async def stop() -> None:
            server.stop()

        self._stops.append(("localstripe", stop))
        return base

    async def start_worker(self) -> Any:
        """The stream worker (`segments worker`)."""
        app = create_worker(self.settings, StreamOptions(
            connection_account=connector_connection_accounts(self.settings)))
        self._stops.append(("worker", app.stop))
        await app.start()
        self.worker = app
        return app

    async def start_api(self, port: int) -> str:
        """The read-model writer, the query API and the web page (`segments api`)."""
        api = ApiProcess(self.settings, host="127.0.0.1", port=usable_port(port))
        self._stops.append(("query API", api.stop))
        await api.start()
        self.api = api
        self.api_url = api.url
        return self.api_url

    async def start_connector(self, port: int, admin_port: int,
                              stripe_api_base: str) -> tuple[str, str]:
        """The webhook receiver (public port) and /connections, /healthz, /metrics (internal
        port) of `segments connector`, against localstripe; returns both URLs."""
        settings = replace(self.settings, stripe_api_base=stripe_api_base)
        # localstripe is local and consistent at once, on this host's clock: no rate limit,
        # no settle delay, no overlap.
        options = BackfillOptions(rate_per_s=200.0, settle_s=0, overlap_s=0, log_every_s=2.0)
        app = create_app(settings, backfill_options=options,
                         reconcile_options=ReconcileOptions(settle_s=0, rate_per_s=200.0))
        runner = http_runner(app, shutdown_timeout=5.0)
        admin = http_runner(create_admin_app(app), shutdown_timeout=5.0)
        started: list[web.AppRunner] = []

        async def stop() -> None:  # the internal port first: the public app owns the state
            for each in reversed(started):
                await each.cleanup()

        await runner.setup()
        started.append(runner)
        self._stops.append(("connector", stop))
        chosen = usable_port(port)
        await web.TCPSite(runner, "127.0.0.1", chosen).start()
        self.connector_url = f"http://127.0.0.1:{chosen}"
        await admin.setup()
        started.append(admin)
        chosen = usable_port(admin_port)
        await web.TCPSite(admin, "127.0.0.1", chosen).start()
        self.connector_admin_url = f"http://127.0.0.1:{chosen}"
        # Connections are read from segments.connections before any is served or created
        # (a POST meanwhile answers 503): the demo connects once they are loaded.
        if not await app[STORE].wait_loaded(60) or not await app[SINK].wait_connected(60):
            raise StackError("the connector did not reach Kafka within 60 s")
        return self.connector_url, self.connector_admin_url

    def running(self) -> list[str]:
        """What `stop()` will stop, in that order."""
        return [name for name, _ in reversed(self._stops)]

    async def stop(self) -> list[str]:
        """Stop everything started, newest first; returns what was stopped."""
        stopped = []
        while self._stops:
            name, stop = self._stops.pop()
            try:
                await stop()
            except Exception:  # keep stopping the rest
                log.exception("stopping the %s failed", name)
            stopped.append(name)
        return stopped
