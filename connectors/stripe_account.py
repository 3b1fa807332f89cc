"""What the connector asks of a Stripe account, through the official `stripe` library.

Checking a pasted API key, registering the webhook endpoint for the event types we use
and removing it again. Every failure becomes a `StripeAccountError` carrying the HTTP
status and the message the user should see; Stripe's own error text is never passed
on, because it can quote a (masked) key and it does not say what *we* need.

`SEGMENTS_WEBHOOK_REGISTRATION=localstripe` (tests and the demo only) registers the
endpoint through the `localstripe` emulator's `POST /_config/webhooks/{id}` instead of
`/v1/webhook_endpoints`, which the emulator does not implement.
"""

from __future__ import annotations

import logging
import secrets as stdlib_secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal

import aiohttp
import stripe
from stripe import _util as stripe_util

from common.settings import Settings
from common.stripe_event_types import NEEDED_EVENT_TYPES
from connectors.errors import ConnectorError
from connectors.store import Registration
from connectors.stripe_client import AsyncStripe

log = logging.getLogger(__name__)

RegistrationMode = Literal["stripe", "localstripe"]

#: A cheap authenticated read per permission the connection needs, in order.
#: (name shown to the user, how to call it). `/v1/account` is not used: restricted
#: keys rarely have it and the emulator does not serve it.
_READ_CHECKS: tuple[tuple[str, str], ...] = (
    ("Events: read (the 30-day backfill)", "events"),
    ("Customers: read (contact emails)", "customers"),
)
WEBHOOK_PERMISSION = "Webhook Endpoints: write (event delivery)"


class StripeAccountError(ConnectorError):
    """A Stripe call for a connection failed; `status` and `reason` are safe to show."""

    status = 502
    retriable = False

    def __init__(self, reason: str, *, field: str | None = "api_key") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class KeyRejected(StripeAccountError):
    status = 400


class KeyLacksPermission(StripeAccountError):
    status = 400


class StripeUnavailable(StripeAccountError):
    status = 502
    retriable = True


@dataclass(frozen=True)
class Endpoint:
    """A registered webhook endpoint: where Stripe posts and how it signs."""

    registration: Registration
    endpoint_id: str | None
    secret: str


def webhook_url(settings: Settings, connection_id: str) -> str:
    return f"{settings.public_url.rstrip('/')}/webhooks/stripe/{connection_id}"


@asynccontextmanager
async def stripe_client(settings: Settings, api_key: str) -> AsyncIterator[stripe.StripeClient]:
    """An async `StripeClient` for one key, pointed at STRIPE_API_BASE when set.

    Built by `connectors.stripe_client`, the one place that makes Stripe clients, so a
    429 during a connect waits for `Retry-After` like the backfill does.
    """
    api = AsyncStripe(api_key, api_base=settings.stripe_api_base, max_network_retries=2)
    try:
        yield api.client
    finally:
        await api.aclose()


def _translate(exc: stripe.StripeError, permission: str) -> StripeAccountError:
    """Map a library error to what the user should read; Stripe's text is not reused."""
    if isinstance(exc, stripe.AuthenticationError):
        return KeyRejected("the API key was rejected by Stripe (invalid, expired or revoked)")
    if isinstance(exc, stripe.PermissionError):
        return KeyLacksPermission(
            f"the API key lacks a permission this integration needs: {permission}; "
            "grant it on the restricted key or use a secret key"
        )
    if isinstance(exc, stripe.RateLimitError):
        return StripeUnavailable("Stripe is rate limiting this account; try again shortly",
                                 field=None)
    if isinstance(exc, stripe.APIConnectionError):
        return StripeUnavailable("Stripe could not be reached; try again", field=None)
    return StripeUnavailable(
        f"Stripe answered {exc.http_status or 'an error'} while checking {permission}",
        field=None,
    )


async def check_key(client: stripe.StripeClient) -> None:
    """Raise unless the key authenticates and can read what the connection needs."""
    for permission, resource in _READ_CHECKS:
        try:
            if resource == "events":
                await client.v1.events.list_async({"limit": 1})
            else:
                await client.v1.customers.list_async({"limit": 1})
        except stripe.StripeError as exc:
            log.info("key check failed: %s (HTTP %s)", type(exc).__name__, exc.http_status)
            raise _translate(exc, permission) from None


async def register_endpoint(
    settings: Settings,
    client: stripe.StripeClient,
    connection_id: str,
    *,
    mode: RegistrationMode = "stripe",
) -> Endpoint:
    """Ask Stripe to post exactly NEEDED_EVENT_TYPES to this connection's webhook URL."""
    url = webhook_url(settings, connection_id)
    events = sorted(NEEDED_EVENT_TYPES)
    if mode == "localstripe":
        return await _register_localstripe(settings, connection_id, url, events)
    try:
        endpoint = await client.v1.webhook_endpoints.create_async({
            "url": url,
            "enabled_events": events,  # type: ignore[typeddict-item]  # str, not Literal
            "description": f"stripe-segments {connection_id}",
            "metadata": {"segments_connection_id": connection_id},
        })
    except stripe.StripeError as exc:
        log.info("endpoint registration failed: %s (HTTP %s)", type(exc).__name__,
                 exc.http_status)
        raise _translate(exc, WEBHOOK_PERMISSION) from None
    secret = getattr(endpoint, "secret", None)
    if not isinstance(secret, str) or not secret:
        # Unusable: nothing could verify its deliveries. Do not leave it behind.
        await delete_endpoint(client, endpoint.id)
        raise StripeUnavailable("Stripe created the endpoint but returned no signing secret",
                                field=None)
    return Endpoint("stripe", endpoint.id, secret)


async def _register_localstripe(
    settings: Settings, connection_id: str, url: str, events: list[str]
) -> Endpoint:
    if not settings.stripe_api_base:
        raise StripeUnavailable(
            "SEGMENTS_WEBHOOK_REGISTRATION=localstripe needs STRIPE_API_BASE", field=None
        )
    secret = f"whsec_{stdlib_secrets.token_urlsafe(24)}"
    form = [("url", url), ("secret", secret), *(("events[]", e) for e in events)]
    target = f"{settings.stripe_api_base.rstrip('/')}/_config/webhooks/{connection_id}"
    try:
        async with aiohttp.ClientSession() as session, session.post(
            target, data=form, timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:
            if resp.status != 200:
                raise StripeUnavailable(
                    f"localstripe refused the webhook registration (HTTP {resp.status})",
                    field=None,
                )
    except aiohttp.ClientError:
        raise StripeUnavailable("localstripe could not be reached", field=None) from None
    return Endpoint("localstripe", connection_id, secret)


async def delete_endpoint(client: stripe.StripeClient, endpoint_id: str) -> str:
    """Remove an endpoint we created; returns what happened, for the caller to show."""
    try:
        await client.v1.webhook_endpoints.delete_async(endpoint_id)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            return "already gone"
        return f"not deleted: Stripe answered {exc.http_status}"
    except stripe.AuthenticationError:
        return "not deleted: the API key is no longer accepted by Stripe"
    except stripe.StripeError as exc:
        return f"not deleted: {type(exc).__name__}"
    return "deleted"


class _DropStripeBodies(logging.Filter):
    """stripe-python logs response bodies at DEBUG; a webhook endpoint's has its secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return "API response body" not in text and "Post details" not in text


def guard_stripe_logging() -> None:
    """Keep secrets out of logs even when someone turns on DEBUG logging or sets
    `STRIPE_LOG`.

    The library prints its request and response lines (bodies included: a webhook
    endpoint's carries its signing secret) straight to stderr, past every logging
    filter, when `stripe.log` or the `STRIPE_LOG` it read at import is "debug" or
    "info". Both are turned off here whatever the environment says, and its logger
    stops at WARNING (with a filter for the bodies should someone lower it again).
    """
    stripe.log = None
    stripe_util.STRIPE_LOG = None
    stripe_log = logging.getLogger("stripe")
    stripe_log.setLevel(logging.WARNING)
    if not any(isinstance(f, _DropStripeBodies) for f in stripe_log.filters):
        stripe_log.addFilter(_DropStripeBodies())
