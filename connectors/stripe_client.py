"""Making Stripe API clients: one place that honours `STRIPE_API_BASE` and pacing.

Every Stripe call of this project goes through the official library. Two things it does
not do on its own, and that a backfill reading 30 days of events must:

- **pace** requests below the account's rate limit (100 operations/s live, 25 in test
  mode) instead of running into it: `RequestPacer` is a token bucket shared by all the
  requests of one client (page fetches of auto-pagination included);
- **honour `Retry-After` on 429**: stripe-python retries connection errors, 409 and 5xx
  (`max_network_retries`), but a 429 only when Stripe adds `Stripe-Should-Retry: true`,
  and it never reads `Retry-After`. `PacedHTTPClient` waits as told, holds the whole
  bucket meanwhile, and retries, before the library sees the answer.

Pacing and 429 handling apply to the async calls (`*_async`, `auto_paging_iter` with
`async for`); synchronous calls go through the library's default client, unpaced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import stripe

log = logging.getLogger(__name__)

#: Retries of connection errors, 409 and 5xx by the library itself (with backoff).
DEFAULT_MAX_NETWORK_RETRIES = 3
#: Extra attempts after a 429 before the library gets it (and raises RateLimitError).
DEFAULT_MAX_RATE_LIMIT_RETRIES = 5
#: Stripe's `Retry-After` is in whole seconds; without one, wait this long.
DEFAULT_RETRY_AFTER_S = 1.0
MAX_RETRY_AFTER_S = 60.0


class RequestPacer:
    """A token bucket: at most `rate` requests per second, bursts of up to `burst`.

    `reserve` is pure bookkeeping on a clock value (unit-tested without sleeping);
    `acquire` sleeps for what it returns. Slots are booked at reservation time, so
    concurrent callers queue up fairly instead of all waking at once.
    """

    def __init__(self, rate: float, burst: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        self.rate = float(rate)
        self.burst = max(1.0, float(burst if burst is not None else 1.0))
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._hold_until = 0.0

    def reserve(self, now: float) -> float:
        """Book one request at `now`; returns how long to wait before sending it.

        During a hold the request is booked at the hold's end, so requests after it are
        spaced by the rate again instead of all leaving together.
        """
        start = max(now, self._hold_until)
        elapsed = max(0.0, start - self._stamp)
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._stamp = max(self._stamp, start)
        self._tokens -= 1.0
        wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        return (start - now) + wait

    def hold(self, seconds: float) -> None:
        """Nobody sends for `seconds` (after a 429): the limit is the account's, not ours."""
        now = self._clock()
        self._hold_until = max(self._hold_until, now + seconds)
        # Spend the bucket so that the burst does not fire the moment the hold ends.
        self._tokens = min(self._tokens, 0.0)

    async def acquire(self) -> None:
        wait = self.reserve(self._clock())
        if wait > 0:
            await asyncio.sleep(wait)


def retry_after_seconds(headers: Mapping[str, str] | None) -> float:
    """Seconds to wait from a 429's `Retry-After` (delta seconds; HTTP dates ignored)."""
    raw = (headers or {}).get("Retry-After") or (headers or {}).get("retry-after")
    try:
        value = float(raw) if raw is not None else DEFAULT_RETRY_AFTER_S
    except ValueError:
        value = DEFAULT_RETRY_AFTER_S
    return min(MAX_RETRY_AFTER_S, max(0.0, value))


class PacedHTTPClient(stripe.AIOHTTPClient):
    """stripe-python's aiohttp client, paced by a `RequestPacer`, waiting out 429s.

    `requests` counts HTTP requests actually sent (the backfill reports them as pages).
    """

    def __init__(self, pacer: RequestPacer | None = None, *,
                 max_rate_limit_retries: int = DEFAULT_MAX_RATE_LIMIT_RETRIES,
                 timeout: float = 30.0) -> None:
        super().__init__(timeout=timeout)
        self.pacer = pacer
        self.max_rate_limit_retries = max_rate_limit_retries
        self.requests = 0
        self.rate_limited = 0

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        """The library's `request_async`, with failures while reading the body retried.

        stripe-python reads the body outside its error handling, so a connection that
        drops mid-body or a body that times out escaped as a raw aiohttp/asyncio error:
        not retried, it stopped the whole backfill. Here it becomes the library's own
        retriable `APIConnectionError`, like a failure before the headers.
        """
        content, status, response_headers = await self.request_stream_async(
            method, url, headers, post_data
        )
        try:
            body: bytes = await content.read()
        except Exception as exc:  # truncated, reset or timed out mid-body
            self._handle_request_error(exc)
        return body, status, response_headers

    async def request_stream_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[Any, int, Mapping[str, str]]:
        attempt = 0
        while True:
            if self.pacer is not None:
                await self.pacer.acquire()
            self.requests += 1
            content, status, response_headers = await super().request_stream_async(
                method, url, headers, post_data
            )
            if status != 429 or attempt >= self.max_rate_limit_retries:
                return content, status, response_headers
            attempt += 1
            self.rate_limited += 1
            await content.read()  # drain, so the connection goes back to the pool
            wait = retry_after_seconds(response_headers)
            log.warning("Stripe rate limit (429): waiting %.1fs (retry %d of %d)",
                        wait, attempt, self.max_rate_limit_retries)
            if self.pacer is not None:
                self.pacer.hold(wait)
            else:
                await asyncio.sleep(wait)


def stripe_client(api_key: str, *, api_base: str | None = None,
                  max_network_retries: int = DEFAULT_MAX_NETWORK_RETRIES,
                  http_client: stripe.HTTPClient | None = None) -> stripe.StripeClient:
    """A `StripeClient` for `api_key`, against `api_base` (`settings.stripe_api_base`).

    `api_base=None` means Stripe itself. `http_client` replaces the library's default
    (sync and async); pass `stripe.new_default_http_client(async_fallback_client=
    PacedHTTPClient(...))` to keep sync calls working while pacing async ones, or use
    `AsyncStripe`, which does exactly that and also closes the session.
    """
    base_addresses: dict[str, str | None] = {"api": api_base.rstrip("/")} if api_base else {}
    return stripe.StripeClient(
        api_key,
        base_addresses=base_addresses,  # type: ignore[arg-type]
        max_network_retries=max_network_retries,
        http_client=http_client,
    )


class AsyncStripe:
    """A paced client for async use, with the aiohttp session it owns.

    `async with AsyncStripe(key, api_base=..., pacer=RequestPacer(20)) as api:` then
    `await api.client.v1.events.list_async(...)`; `api.requests` counts requests.
    """

    def __init__(self, api_key: str, *, api_base: str | None = None,
                 pacer: RequestPacer | None = None,
                 max_network_retries: int = DEFAULT_MAX_NETWORK_RETRIES,
                 timeout: float = 30.0) -> None:
        self.http = PacedHTTPClient(pacer, timeout=timeout)
        self.client = stripe_client(
            api_key, api_base=api_base, max_network_retries=max_network_retries,
            http_client=stripe.new_default_http_client(async_fallback_client=self.http),
        )

    @property
    def requests(self) -> int:
        return self.http.requests

    async def aclose(self) -> None:
        await self.http.close_async()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> AsyncStripe:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
