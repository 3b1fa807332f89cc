"""The stream worker: the pipeline of `stream.pipeline` driven by `stream.runtime`.

No autodiscovery and no import-time side effects: `create_app(settings)` builds a
worker, so tests can run several with different prefixes, clocks and options in one
process.
"""

from __future__ import annotations

from typing import Any

from common.settings import Settings
from common.topics import (
    BY_CHARGE_TOPIC,
    CONTROL_TOPIC,
    EVENTS_TOPIC,
    FACTS_TOPIC,
    RULES_TOPIC,
)
from stream.metrics import StreamMetrics
from stream.options import Clock, EmailLookup, StreamOptions, system_clock
from stream.pipeline import Pipeline
from stream.runtime import StreamRuntime

__all__ = ["Clock", "EmailLookup", "StreamApp", "StreamOptions",
           "create_app", "group_id", "source_topics", "system_clock"]


def source_topics(settings: Settings) -> list[str]:
    """The topics the worker's consumer group reads (its lag is measured on them)."""
    return [settings.topic(t) for t in (EVENTS_TOPIC, BY_CHARGE_TOPIC, FACTS_TOPIC,
                                        CONTROL_TOPIC, RULES_TOPIC)]


def group_id(settings: Settings) -> str:
    """The workers' consumer group (and the prefix of their transactional ids)."""
    return f"{settings.topic_prefix}segments"


class StreamApp:
    """One worker: start it, `wait()` until it stops or fails, `stop()` it."""

    def __init__(self, settings: Settings, options: StreamOptions) -> None:
        self.settings = settings
        self.options = options
        self.pipeline = Pipeline(settings, options)
        self.group_id = group_id(settings)
        self.runtime = StreamRuntime(
            settings=settings, group_id=self.group_id,
            handler=self.pipeline,
            exactly_once=options.processing_guarantee == "exactly_once",
            commit_interval=options.commit_interval, tick_interval=options.tick_interval,
            linger_ms=options.linger_ms,
            session_timeout_ms=round(options.session_timeout_s * 1000))

    @property
    def metrics(self) -> StreamMetrics:
        return self.pipeline.metrics

    def assigned(self) -> set[int]:
        return self.runtime.assigned()

    @property
    def failed(self) -> BaseException | None:
        return self.runtime.failed

    async def start(self) -> None:
        await self.runtime.start()

    async def stop(self) -> None:
        await self.runtime.stop()

    async def wait(self) -> None:
        await self.runtime.wait()

    async def __aenter__(self) -> StreamApp:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


def create_app(settings: Settings, options: StreamOptions | None = None) -> StreamApp:
    return StreamApp(settings, options or StreamOptions())
