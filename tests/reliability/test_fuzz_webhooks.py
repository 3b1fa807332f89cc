"""Fuzzing `POST /webhooks/stripe/{id}` on the real connector, Kafka and Redis.

Every input goes over a raw socket to an in-process connector. Invariants, per input:
the answer is 2xx or 4xx (never 5xx, never silence), a bad signature is a 400 whatever
the body, an oversized body a 413; and over the whole campaign: the raw-event topic
holds exactly the events answered `{"received": true}` (not ignored), each once, and
nothing else. Counts are printed (`-s`) and recorded in docs/reliability.md.

Campaign 1 (bodies and signatures): arbitrary bytes, arbitrary JSON, event-shaped
JSON with arbitrary contents, invalid UTF-8 spliced into valid events, nesting up to
5000 deep, bodies around and over the 1 MiB cap, integers past 64 bits; each with a
valid signature, one made with another connection's secret, a stale one, a garbage
header, none, or one over another body.

Campaign 2 (headers and framing): CR/LF/NUL/obs-text/obs-fold in header names, values
and the request target, duplicated and conflicting Stripe-Signature, Content-Length and
Transfer-Encoding headers, and a signed event smuggled inside the body, which must
never reach the topic.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from common.settings import Settings
from common.stripe_event_types import NEEDED_EVENT_TYPES
from connectors.contract import RawEvent
from connectors.sink import MAX_RECORD_BYTES
from connectors.store import new_connection_id
from connectors.webhooks import MAX_BODY_BYTES
from tests.connector_harness import Connector, read_events
from tests.reliability.ledger import LEDGER
from tests.reliability.raw_http import Response, exchange, request_bytes
from tests.reliability.threaded import LoopThread, connector_in_thread, port_of
from tests.stripe_signing import sign

pytestmark = pytest.mark.reliability

EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "800"))
FUZZ = hsettings(
    max_examples=EXAMPLES, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture, HealthCheck.large_base_example],
)
NEEDED = sorted(NEEDED_EVENT_TYPES)
TYPES = st.one_of(st.sampled_from([*NEEDED, "plan.created", "ping", ""]), st.text(max_size=30))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                    st.integers(min_value=2**63, max_value=2**80), st.text(max_size=30))
JSONISH: st.SearchStrategy[Any] = st.recursive(
    SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                     st.dictionaries(st.text(max_size=10), inner, max_size=5)),
    max_leaves=30)


class Campaign:
    """One connector, two connections, and the tally of what was sent and answered."""

    def __init__(self, loop: LoopThread, connector: Connector) -> None:
        self.loop, self.connector = loop, connector
        self.port = port_of(connector)
        self.secret, self.other_secret = LEDGER.webhook_secret(), LEDGER.webhook_secret()
        self.connection = self._connect(self.secret)
        self.other_connection = self._connect(self.other_secret)
        self.tried = 0
        self.statuses: Counter[int] = Counter()
        self.accepted: Counter[str] = Counter()

    def _connect(self, secret: str) -> str:
        connection_id = new_connection_id()
        self.loop.run(self.connector.store.create(
            connection_id=connection_id, account_id="acme", api_key=LEDGER.api_key(),
            webhook_secret=secret, registration="manual", webhook_endpoint_id=None))
        return connection_id

    def send(self, raw: bytes) -> list[Response]:
        self.tried += 1
        responses = exchange(self.port, raw, timeout=15)
        for response in responses:
            self.statuses[response.status] += 1
            assert 200 <= response.status < 500, (response, raw[:300])
        return responses

    def record(self, response: Response, event_id: str | None) -> None:
        if response.status == 200 and orjson.loads(response.body) == {"received": True}:
            assert event_id is not None, "accepted an event the oracle cannot name"
            self.accepted[event_id] += 1

    def verify_topic(self) -> None:
        settings = self.connector.settings
        events = self.loop.run(read_events(settings, expect=sum(self.accepted.values()),
                                           timeout=30), timeout=60)
        on_topic = Counter(e.event_id for e in events)
        assert on_topic == self.accepted, (
            f"topic and 2xx answers differ: extra {on_topic - self.accepted}, "
            f"missing {self.accepted - on_topic}")
        for event in events:
            LEDGER.check_bytes("topic message", event.to_bytes())


@pytest.fixture
def campaign(settings: Settings) -> Iterator[Campaign]:
    with connector_in_thread(settings) as (loop, connector):
        yield Campaign(loop, connector)


def event_doc(draw: st.DrawFn, *, nested: int = 0, pad: int = 0) -> dict[str, Any]:
    obj: Any = draw(st.dictionaries(st.text(max_size=10), JSONISH, max_size=4))
    for _ in range(nested):
        obj = {"n": obj} if nested % 2 else [obj]
    doc: dict[str, Any] = {"id": f"evt_fz_{uuid.uuid4().hex}", "object": "event",
                           "type": draw(TYPES), "created": int(time.time()),
                           "data": {"object": obj}}
    if draw(st.booleans()):
        doc.update(draw(st.dictionaries(st.sampled_from(["livemode", "api_version", "request",
                                                         "pending_webhooks", "x"]), JSONISH)))
    if pad:
        doc["pad"] = "x" * pad
    return doc


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["bytes", "json", "event", "event", "event", "utf8", "deep",
                                 "huge", "truncated"]))
    if kind == "bytes":
        return draw(st.binary(max_size=2048))
    if kind == "json":
        return json.dumps(draw(JSONISH)).encode()
    if kind == "deep":
        return dumps(event_doc(draw)).replace(
            b'"data":{', b'"data":{"deep":' + _nesting(draw(st.integers(1, 5000))) + b",", 1)
    if kind == "huge":
        size = draw(st.one_of(st.integers(MAX_BODY_BYTES - 300, MAX_BODY_BYTES + 300),
                              st.integers(0, 2 * MAX_BODY_BYTES)))
        shell = event_doc(draw)
        return dumps({**shell, "pad": "x" * max(0, size - len(dumps(shell)) - 9)})
    body = dumps(event_doc(draw))
    if kind == "utf8":
        at = draw(st.integers(0, len(body)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                    b"\xc0\xaf", b"\x80"]))
        return body[:at] + bad + body[at:]
    if kind == "truncated":
        return body[:draw(st.integers(0, len(body)))]
    return body


def dumps(doc: Any) -> bytes:
    """JSON as any sender may write it: integers of any size, NaN and all."""
    return json.dumps(doc, separators=(",", ":")).encode()


def _nesting(depth: int) -> bytes:
    return b'{"a":' * (depth // 2) + b"[" * (depth - depth // 2) + b"1" + \
        b"]" * (depth - depth // 2) + b"}" * (depth // 2)


def oracle(body: bytes) -> tuple[int, str | None]:
    """(status, event id if it is to be published) for a correctly signed body."""
    if len(body) > MAX_BODY_BYTES:
        return 413, None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return 400, None
    if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) \
            or not isinstance(doc.get("type"), str):
        return 400, None
    if doc["type"] not in NEEDED_EVENT_TYPES:
        return 200, None
    try:  # what cannot be written back into an envelope cannot be published
        envelope = RawEvent(new_connection_id(), "acme", "webhook", 10**12, doc).to_bytes()
    except orjson.JSONEncodeError:
        return 400, None
    return (413, None) if len(envelope) > MAX_RECORD_BYTES else (200, doc["id"])


DEEP = dumps({"id": "evt_fz_deep", "object": "event", "type": "charge.succeeded",
              "data": {"object": {}}}).replace(b'"object":{}', b'"object":' + b"[" * 300
                                                + b"]" * 300)
NEAR_CAP = dumps({"id": "evt_fz_near_cap", "object": "event", "type": "charge.succeeded",
                  "data": {"object": {}}, "pad": "x" * (MAX_BODY_BYTES - 200)})
SIGNATURES = st.sampled_from(["valid", "valid", "valid", "valid_and_junk", "near_future",
                              "future",
                              "other_connection", "other_connection_id", "stale", "missing",
                              "garbage", "other_body"])


def test_bodies_and_signatures(campaign: Campaign) -> None:
    c = campaign

    @FUZZ
    @given(body=bodies(), mode=SIGNATURES, garbage=st.text(max_size=80))
    @example(body=DEEP, mode="valid", garbage="")  # found: 500 (orjson writes 255 levels)
    @example(body=NEAR_CAP, mode="valid", garbage="")  # found: 503 forever (record limit)
    def one(body: bytes, mode: str, garbage: str) -> None:
        now = int(time.time())
        path, secret, stamp, signed = c.connection, c.secret, now, body
        # Clock skew within the tolerance passes; more than 300 s ahead is refused (issue 15).
        expect_ok = mode in ("valid", "valid_and_junk", "near_future")
        if mode == "other_connection":
            secret = c.other_secret  # Stripe would sign with the other endpoint's secret
        elif mode == "other_connection_id":
            path = c.other_connection  # signed for one connection, posted to the other
        elif mode == "stale":
            stamp = now - 301
        elif mode == "near_future":
            stamp = now + 200
        elif mode == "future":
            stamp = now + 3600
        elif mode == "other_body":
            signed = body + b" "
        header = sign(signed, secret, stamp)
        if mode == "valid_and_junk":
            header += ",v1=00ff,v0=abc,x=" + "".join(ch for ch in garbage
                                                     if " " <= ch <= "~")
        headers: list[tuple[bytes, bytes]] = []
        if mode == "garbage":  # a wrong value; malformed header lines are campaign 2's
            headers.append((b"Stripe-Signature",
                            "".join(ch for ch in garbage if " " <= ch <= "~").encode()))
        elif mode != "missing":
            headers.append((b"Stripe-Signature", header.encode()))
        raw = request_bytes("POST", f"/webhooks/stripe/{path}", headers, body)
        [response] = c.send(raw)
        status, event_id = oracle(body)
        if len(body) > MAX_BODY_BYTES:
            assert response.status == 413, (mode, response)
        elif not expect_ok:
            assert response.status == 400, (mode, response)
        else:
            assert response.status == status, (mode, response, body[:200])
        c.record(response, event_id)

    one()
    c.verify_topic()
    print(f"webhook body/signature fuzz: {c.tried} inputs, answers {dict(c.statuses)}, "
          f"{sum(c.accepted.values())} published")


FRAMING = st.sampled_from(["plain", "plain", "plain", "dup_cl_same", "dup_cl_diff", "cl_te",
                           "te_only", "bad_cl", "neg_cl", "smuggle"])
NASTY = st.sampled_from([b"", b"", b"", b"", b"\r\n", b"\n", b"\r", b"\x00", b"\x7f", b"\xff\xfe",
                         b"\xc3\xa9", b"\r\n ", b"\r\nStripe-Signature: t=1,v1=00", b" ", b":",
                         b"\t"])
TARGETS = st.sampled_from(["plain", "plain", "plain", "crlf", "nul", "dots", "query", "long",
                           "other"])


@st.composite
def header_items(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    items = []
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from([b"X-Test", b"Stripe-Signature", b"Content-Type",
                                     b"Host", b"Expect", b"X Bad", b"X\x00Nul", b""]))
        text = st.one_of(st.binary(max_size=30),
                         st.text("abcdef =,;t1v", max_size=30).map(str.encode))
        value = draw(text) + draw(NASTY) + draw(text)
        if draw(st.integers(0, 20)) == 0:
            value *= 300  # past aiohttp's 8190-byte line limit
        items.append((name, value))
    return items


def test_headers_and_framing(campaign: Campaign) -> None:
    c = campaign
    outcomes: Counter[tuple[str, str, int]] = Counter()

    @FUZZ
    @given(framing=FRAMING, extra=header_items(), first=st.booleans(),
           target=TARGETS)
    @example(framing="plain", extra=[(b"Expect", b"\x80" * 10)], first=False, target="plain")
    def one(framing: str, extra: list[tuple[bytes, bytes]], first: bool, target: str) -> None:
        event_id = f"evt_hdr_{uuid.uuid4().hex}"
        body = orjson.dumps({"id": event_id, "object": "event", "type": "charge.succeeded",
                             "created": int(time.time()), "data": {"object": {}}})
        good = (b"Stripe-Signature", sign(body, c.secret).encode())
        headers = [good, *extra] if first else [*extra, good]
        path = {"plain": f"/webhooks/stripe/{c.connection}",
                "crlf": f"/webhooks/stripe/{c.connection}%0d%0aX-Injected:%201",
                "nul": f"/webhooks/stripe/{c.connection}%00",
                "dots": f"/webhooks/stripe/x/../{c.connection}",
                "query": f"/webhooks/stripe/{c.connection}?a=%0d%0a",
                "long": f"/webhooks/stripe/{c.connection}" + "a" * 9000,
                "other": f"/webhooks/stripe/{c.other_connection}"}[target]
        smuggled_id: str | None = None
        content_length = True
        if framing == "dup_cl_same":
            headers.append((b"Content-Length", b"%d" % len(body)))
        elif framing == "dup_cl_diff":
            headers.append((b"Content-Length", b"%d" % (len(body) - 1)))
        elif framing == "cl_te":
            headers.append((b"Transfer-Encoding", b"chunked"))
        elif framing == "te_only":
            content_length = False
            headers.append((b"Transfer-Encoding", b"chunked"))
            body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        elif framing == "bad_cl":
            content_length = False
            headers.append((b"Content-Length", b"1e3"))
        elif framing == "neg_cl":
            content_length = False
            headers.append((b"Content-Length", b"-1"))
        elif framing == "smuggle":
            smuggled_id = f"evt_smuggled_{uuid.uuid4().hex}"
            inner = orjson.dumps({"id": smuggled_id, "object": "event",
                                  "type": "charge.succeeded", "data": {"object": {}}})
            inner_request = request_bytes(
                "POST", f"/webhooks/stripe/{c.connection}",
                [(b"Stripe-Signature", sign(inner, c.secret).encode())], inner)
            headers.append((b"Transfer-Encoding", b"chunked"))
            body = b"0\r\n\r\n" + inner_request
        raw = request_bytes("POST", path, headers, body, content_length=content_length)
        responses = c.send(raw)
        clean = (framing in ("plain", "te_only") and target in ("plain", "query")
                 and all(_harmless(name, value) for name, value in extra))
        if len(responses) > 1 or smuggled_id is not None:
            assert all(r.status >= 400 for r in responses), (framing, responses)
        first_response = responses[0]
        outcomes[(framing, target, first_response.status)] += 1
        if first_response.status == 200:
            # Accepted only when a correct signature was the one read, for this connection.
            assert target != "other", responses
            c.record(first_response, event_id)
        elif clean and first:
            assert first_response.status == 200, (framing, target, extra, responses)

    one()
    c.verify_topic()
    print(f"webhook header/framing fuzz: {c.tried} inputs, answers {dict(c.statuses)}, "
          f"{sum(c.accepted.values())} published; by framing, target, status: "
          f"{dict(sorted(outcomes.items()))}")


def _harmless(name: bytes, value: bytes) -> bool:
    """A header line that any HTTP parser takes as it is and that changes nothing."""
    if name in (b"Stripe-Signature", b"Content-Type", b"Host", b"Expect", b""):
        return False
    if not name.isalnum() and name != b"X-Test":
        return False
    return len(value) < 8000 and all(0x20 <= b < 0x7f for b in value.strip(b" \t"))
