"""The Faust application: every topic, table, agent and timer, declared in one place.

No autodiscovery and no import-time side effects: `create_app(settings)` builds an app
and wires the agents of `stream.agents` explicitly, so tests can run several apps with
different prefixes, clocks and stores in one process.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segments.settings import Settings
from stream import eos

# Faust ships no type information: its decorators are untyped by nature.
# mypy: disable-error-code="untyped-decorator"

Clock = Callable[[], int]
#: (connection id, Stripe customer id) -> the customer's email, None if it has none.
EmailLookup = Callable[[str, str], Awaitable[str | None]]

CONTROL_TOPIC = "segments.control"


def system_clock() -> int:
    return int(time.time())


@dataclass(frozen=True, kw_only=True)
class StreamOptions:
    """How the worker runs; defaults are the production choices (see README)."""

    processing_guarantee: str = "exactly_once"
    #: Table store; default `default_store(processing_guarantee)`.
    store: str | None = None
    datadir: str | None = None
    commit_interval: float = 0.5
    tick_interval: float = 1.0
    clock: Clock = system_clock
    web_port: int | None = None
    #: Asked when a fact's customer has no known email (a customer older than the
    #: backfill window has no customer.* event); None waits for such an event.
    email_lookup: EmailLookup | None = None


def default_store(processing_guarantee: str) -> str:
    """Faust's store only matters for Faust tables, which the agents do not use (their
    state is `stream.state`); memory:// keeps nothing stale on disk."""
    return "memory://"


def create_app(settings: Settings, options: StreamOptions | None = None) -> Any:
    import faust

    options = options or StreamOptions()
    if options.processing_guarantee == "exactly_once":
        eos.install()
    datadir = options.datadir or os.environ.get("SEGMENTS_DATADIR") or str(
        Path(".stack") / "worker-data"
    )
    app = faust.App(
        f"{settings.topic_prefix}segments",
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        processing_guarantee=options.processing_guarantee,
        store=options.store or os.environ.get("SEGMENTS_STORE")
        or default_store(options.processing_guarantee),
        datadir=datadir,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        broker_commit_interval=options.commit_interval,
        stream_buffer_maxsize=131072,
        web_enabled=options.web_port is not None,
        web_port=options.web_port or 6066,
        web_bind="127.0.0.1",
        table_cleanup_interval=3600.0,
        consumer_auto_offset_reset="earliest",
        # A worker killed without warning holds its partitions until its session
        # expires; 10 s (not Faust's 60 s) bounds how long they stall.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        producer_acks=-1,
        # Fatal errors exit the process on purpose; the orchestrator restarts it.
        agent_supervisor="mode.OneForAllSupervisor",
    )
    from stream.agents import wire

    wire(app, settings, options)

    @app.task
    async def dump_tasks_on_sigusr1() -> None:
        """`kill -USR1 <worker>` logs every asyncio task's stack: why is it stuck?"""
        import asyncio
        import io
        import logging
        import signal

        def dump() -> None:
            out = io.StringIO()
            for task in asyncio.all_tasks():
                task.print_stack(file=out)
            logging.getLogger("segments.stream").warning("asyncio tasks:\n%s", out.getvalue())

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)

    return app
