"""The run of `segments demo` (see `segments.commands.demo` for what it shows).

Phases: topics and rules; localstripe with the account's history; worker, query API
and connector; `POST /connections` (the connector starts the backfill); the webhook
burst, then a rule edit once the burst and the backfill are in; then, unless `--once`,
a trickle of new activity until Ctrl-C. The view redraws from `Monitor` snapshots; the
summary comes from the last one, taken before anything is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from common.auth import mint_token, resolve_signing_secret
from common.settings import Settings
from common.topics import ensure_topics
from segments.demo.feed import DAY, DEMO_RULES, RULE_EDIT, DemoActivity
from segments.demo.services import DemoServices
from segments.demo.stripe_history import seed_account
from segments.demo.terminal import install_interrupt, new_credentials, relative, terminal_width
from segments.demo.view import Monitor, Snapshot, backfill_text, render_line, render_screen
from segments.demo.webhooks import WebhookSender
from segments.errors import ShellError
from segments.rules_admin import publish_rule
from stream.app import source_topics

log = logging.getLogger(__name__)

#: Customer numbers of the failed charges that leave their 30-day window during the demo.
EXPIRING = 900_000
#: Validity of the token the demo prints and uses (the demo may run for hours).
TOKEN_TTL_S = 12 * 3600


class DemoError(ShellError, RuntimeError):
    pass


class Demo:
    def __init__(self, settings: Settings, args: argparse.Namespace, *, account: str,
                 log_path: Path) -> None:
        self.settings = settings
        self.args = args
        self.account = account
        self.log_path = log_path
        self.tty = sys.stdout.isatty()
        self.stop = asyncio.Event()
        self.burst_done = asyncio.Event()
        self.rule_edited = asyncio.Event()
        self.final: Snapshot | None = None
        self.example_email: str | None = None
        self.seeded = ""
        #: Epoch second by which the burst's expiring facts have left their window.
        self.last_expiry = float("inf")
        self.connection_id = ""
        self.sender: WebhookSender | None = None
        self.services = DemoServices(settings)
        #: A token for the demo's account, signed with the local secret the servers use.
        self.token = ""

    def say(self, text: str) -> None:
        print(text, flush=True)

    async def main(self) -> int:
        install_interrupt(self.stop)
        code = 1
        try:
            code = await self._run()
        except DemoError as exc:
            print(f"segments demo: {exc}", file=sys.stderr)
        except Exception as exc:  # Kafka, Redis or a port: say it in one line, log it all
            log.exception("the demo stopped")
            print(f"segments demo: stopped by {type(exc).__name__}: {exc} (details in "
                  f"{self.log_path})", file=sys.stderr)
        finally:
            if self.tty:
                print("\x1b[?25h", end="")  # the cursor, hidden while the view ran
            self.say("\nstopping: " + (", ".join(self.services.running())
                                       or "nothing to stop") + "…")
            await self.services.stop()
        if self.final is not None:
            self.say(self.summary(self.final))
        return code

    async def _run(self) -> int:
        self.say(f"topics: prefix {self.settings.topic_prefix!r}")
        await ensure_topics(self.settings)
        for doc in DEMO_RULES:
            await publish_rule(self.settings, {**doc, "account_id": self.account})
        self.say(f"rules:  {len(DEMO_RULES)} for account {self.account!r}: "
                 + ", ".join(d["id"] for d in DEMO_RULES))
        api_key, secret = new_credentials()
        base = self.services.start_localstripe()
        seeded = await asyncio.to_thread(seed_account, base, api_key,
                                         self.args.backfill_customers)
        self.seeded = seeded.describe()
        self.say(f"localstripe: {base} holds the account's history: {self.seeded}")
        secret_key = resolve_signing_secret(self.settings)
        if secret_key is None:
            raise DemoError("only SEGMENTS_AUTH_JWKS is configured: the demo signs its own "
                            "token and needs SEGMENTS_AUTH_SECRET (or neither, locally)")
        self.token = mint_token(secret_key, accounts=[self.account], ttl_s=TOKEN_TTL_S,
                                audience=self.settings.auth_audience)
        self.say("starting: worker, query API, connector (in this process)…")
        worker = await self.services.start_worker()
        api_url = await self.services.start_api(self.settings.api_port)
        connector_url, admin_url = await self.services.start_connector(
            self.settings.connector_port, self.settings.connector_admin_port, base)
        self.say(f"token:  {self.token}  (account {self.account!r}, "
                 f"{TOKEN_TTL_S // 3600} h; `segments token` makes more)")
        self.say(f"web page: {self.page_url(api_url)}")
        headers = {"Authorization": f"Bearer {self.token}"}
        # Two sessions: the token goes to the APIs only, never to the webhook route.
        async with aiohttp.ClientSession(headers=headers) as session, \
                aiohttp.ClientSession() as webhook_session:
            self.connection_id = await self._connect(session, admin_url, api_key, secret)
            monitor = Monitor(session, api_url=api_url, connector_url=admin_url,
                              connection_id=self.connection_id, account_id=self.account,
                              worker_registry=worker.metrics.registry,
                              kafka_settings=self.settings,
                              group=worker.group_id, topics=source_topics(self.settings))
            monitor.start()
            self.sender = WebhookSender(
                webhook_session, f"{connector_url}/webhooks/stripe/{self.connection_id}", secret,
                seed=self.args.seed)
            tasks = [asyncio.create_task(self._feed(self.sender), name="demo-feed"),
                     asyncio.create_task(self._edit_rule(monitor), name="demo-rule-edit")]
            try:
                code = await self._watch(monitor, tasks)
                self.final = await monitor.snapshot()
                self.final.redelivered = self.sender.stats.redelivered
                self.example_email = await self._example(session, api_url)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await monitor.stop()
        return code

    def page_url(self, api_url: str) -> str:
        """The web page with the token in its fragment (never sent to a server)."""
        return f"{api_url}/#token={self.token}"

    async def _connect(self, session: aiohttp.ClientSession, connector_url: str,
                       api_key: str, secret: str) -> str:
        """Connect the account as Center does: key checked at "Stripe", secret given."""
        body = {"account_id": self.account, "api_key": api_key, "webhook_secret": secret}
        async with session.post(f"{connector_url}/connections", json=body) as resp:
            doc = await resp.json()
            if resp.status != 201:
                raise DemoError(f"POST /connections answered {resp.status}: {doc}")
        return str(doc["id"])

    async def _feed(self, sender: WebhookSender) -> None:
        now = int(time.time())
        feed = DemoActivity(self.args.seed, now)
        leaving = [5 + 3 * k for k in range(4)]  # seconds until each leaves its window
        self.last_expiry = now + max(leaving) + 1
        stories = [feed.expiring_failure(EXPIRING + k, s) for k, s in enumerate(leaving)]
        stories += [feed.story(n, start=now - feed.rand.randint(8, 29) * DAY, spread=DAY)
                    for n in range(self.args.customers)]
        await sender.deliver_stories(stories)
        self.burst_done.set()
        if self.args.once:
            return
        n = self.args.customers
        while True:  # a trickle of new activity, as a live account produces
            feed.now = int(time.time())
            story = (feed.expiring_failure(EXPIRING + n, 15) if n % 10 == 0
                     else feed.story(n, start=feed.now - 120, spread=20))
            await sender.deliver_in_order(story)
            n += 1
            await asyncio.sleep(0.8)

    async def _edit_rule(self, monitor: Monitor) -> None:
        """Once the burst and the backfill are in, raise a threshold: a `rule` recompute."""

        await self.burst_done.wait()
        finished = ("done", "failed")
        # Polls the connector over HTTP, as an operator would: no event to wait on.
        while (await monitor.backfill() or {}).get("state") not in finished:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)
        await publish_rule(self.settings, {**RULE_EDIT, "account_id": self.account})
        self.rule_edited.set()

    def _header(self, snap: Snapshot, api_url: str, connector_url: str) -> list[str]:
        return [
            f"stripe-segments demo · account {self.account!r} · topics "
            f"{self.settings.topic_prefix}* · {snap.elapsed:5.1f}s   "
            + ("(exits when processed)" if self.args.once else "(Ctrl-C stops everything)"),
            f"  web page  {api_url}/#token=…  (the full address is printed above the view)",
            f"  query API {api_url}/accounts/{self.account}/segments  (Authorization: Bearer)",
            f"  connector webhooks {self.services.connector_url}, connections and /metrics "
            f"{connector_url}  (connection {self.connection_id})",
        ]

    def _done(self, snap: Snapshot, monitor: Monitor) -> bool:
        return (self.burst_done.is_set() and self.rule_edited.is_set()
                and (snap.backfill or {}).get("state") == "done"
                and snap.filled() == len(DEMO_RULES) and time.time() > self.last_expiry
                and monitor.quiet_for() >= 3.0)

    async def _watch(self, monitor: Monitor, tasks: list[asyncio.Task[None]]) -> int:
        assert self.sender is not None
        api_url, connector_url = monitor.api_url, monitor.connector_url

        last_line = 0.0
        if self.tty:
            print("\x1b[2J\x1b[?25l", end="")
        while not self.stop.is_set():
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise DemoError(f"{task.get_name()} failed: {task.exception()!r}")
            snap = await monitor.snapshot()
            snap.redelivered = self.sender.stats.redelivered
            if self.tty:
                width = terminal_width()
                screen = render_screen(snap, header=self._header(snap, api_url, connector_url),
                                       width=width)
                print("\x1b[H" + screen.replace("\n", "\x1b[K\n") + "\x1b[K\x1b[J",
                      end="", flush=True)
            elif snap.elapsed - last_line >= 5.0:
                last_line = snap.elapsed
                self.say(render_line(snap))
            if self.args.once and self._done(snap, monitor):
                return 0
            if self.args.once and snap.elapsed > self.args.timeout:
                self.say(f"\nsegments demo: --timeout {self.args.timeout:.0f}s reached")
                return 0 if snap.filled() == len(DEMO_RULES) else 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5 if self.tty else 1.0)
        return 0

    async def _example(self, session: aiohttp.ClientSession, api_url: str) -> str | None:
        """A real member's email, for the summary's contact query."""
        url = f"{api_url}/accounts/{self.account}/segments/{DEMO_RULES[2]['id']}/members?limit=1"
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, KeyError, IndexError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                doc: Any = await resp.json()
                return str(doc["members"][0]["email"])
        return None

    def summary(self, snap: Snapshot) -> str:

        stats = self.sender.stats if self.sender is not None else None
        api = f"http://127.0.0.1:{self.settings.api_port}"
        if self.services.api_url:
            api = self.services.api_url
        width = max([len(s) for s, _, _, _ in snap.segments] + [8])
        causes = ", ".join(f"{k} {v:,}" for k, v in snap.causes.items() if v) or "none"
        lines = [
            f"\nsummary after {snap.elapsed:.1f}s",
            f"  in    {snap.webhooks:,} signed webhooks accepted by the connector"
            + (f" ({stats.redelivered} redeliveries, {stats.refused} refused, "
               f"{stats.failed} undeliverable)" if stats else ""),
            f"        backfill {backfill_text(snap.backfill)}",
            f"        (made there with stripe-python before connecting: {self.seeded})",
            f"  work  {snap.events:,} events classified → {snap.facts:,} facts; "
            f"{snap.duplicates:,} duplicate announcements collapsed; {snap.no_email:,} "
            "occurrences without an email",
            f"  out   {snap.changes:,} membership changes: {snap.joined:,} joined, "
            f"{snap.left:,} left (by cause: {causes})",
            f"  peak  {snap.peaks.get('webhooks', 0):,.0f} webhooks/s into the connector, "
            f"{snap.peaks.get('events', 0):,.0f} events/s classified, "
            f"{snap.peaks.get('changes', 0):,.0f} membership changes/s",
            f"  segments: {snap.filled()}/{len(DEMO_RULES)} have members",
        ]
        for segment, name, count, version in snap.segments:
            lines.append(f"    {segment:{width}} {count:6,}  {name} (rule v{version})")
        email = self.example_email or "ann.lee0@example.com"
        prefix = self.settings.topic_prefix
        auth = '-H "Authorization: Bearer $TOKEN"'
        lines += [
            "",
            "query the API while a demo runs (afterwards, `segments api` with the same "
            "prefix serves the same read model while Redis runs):",
            f"  TOKEN=$(segments token --account {self.account})",
            f"  curl {auth} '{api}/accounts/{self.account}/segments'",
            f"  curl {auth} '{api}/accounts/{self.account}/segments/{DEMO_RULES[2]['id']}"
            "/members?limit=5'",
            f"  curl {auth} '{api}/accounts/{self.account}/contacts/{email}/segments'",
            f"  SEGMENTS_TOPIC_PREFIX={prefix} segments api      # then open {api}/#token=$TOKEN",
            f"  SEGMENTS_TOPIC_PREFIX={prefix} segments members {DEMO_RULES[2]['id']} "
            f"--account {self.account}",
            f"logs of every component: {relative(self.log_path)} (SEGMENTS_LOG_FORMAT=text "
            "for readable lines)",
        ]
        return "\n".join(lines)
