"""The read model's pure parts: key layout, record decoding, cursors, parameters, feed."""

from __future__ import annotations

import dataclasses

import orjson
import pytest
from aiohttp.test_utils import make_mocked_request

from serving.api import ApiError, account_param, cursor_param, id_param, limit_param
from serving.change_feed import ChangeFeed, Subscription, change_event, rule_event
from serving.metrics import ServingMetrics
from serving.read_model import (
    APPLY_MEMBER,
    APPLY_RULE,
    MemberWrite,
    Namespace,
    RecordError,
    RuleWrite,
    command,
    decode_change,
    write_from_change,
    write_from_member_record,
    write_from_rule_record,
)
from serving.read_model_query import BadCursor, decode_cursor, encode_cursor
from serving.web import sse_message
from stream.changes import MembershipChange, member_key, member_state, rule_key

pytestmark = pytest.mark.unit

NS = Namespace("p.")
ANN = MembershipChange("acme", "vip", "ann@example.com", "joined", "2026-11-26T23:00:00Z",
                       "fact", "re_1", 2)


def test_keys_are_scoped_by_account_and_generation() -> None:
    assert NS.members("g1", "acme", "vip") == "p.seg:g1:members:acme:vip"
    assert NS.members("g1", "globex", "vip") != NS.members("g1", "acme", "vip")
    assert NS.contact("0", "acme", "ann@example.com") == "p.seg:0:contact:acme:ann@example.com"
    assert NS.current == "p.seg:current"
    assert Namespace("a[1]*.").generation_pattern("g") == r"a\[1\]\*.seg:g:*"


def test_member_commands() -> None:
    script, keys, args = command(NS, "g1", write_from_change(ANN), fence=True)
    assert script == APPLY_MEMBER
    assert keys == ["p.seg:current", "p.seg:g1:members:acme:vip", "p.seg:g1:state:acme:vip",
                    "p.seg:g1:contact:acme:ann@example.com", "p.seg:g1:rule:acme:vip",
                    "p.seg:g1:segments", "p.seg:g1:accounts:vip", "p.seg:seq",
                    "p.seg:g1:seqs"]
    assert args == ["g1", "ann@example.com", member_state(ANN), "vip", "acme", "acme:vip"]
    left = MemberWrite("acme", "vip", "ann@example.com", None)
    assert command(NS, "g1", left, fence=False)[2][:3] == ["", "ann@example.com", b""]


def test_rule_commands() -> None:
    script, keys, args = command(NS, "0", RuleWrite("acme", "vip", b"{}"), fence=True)
    assert script == APPLY_RULE
    assert keys[1:3] == ["p.seg:0:rule:acme:vip", "p.seg:0:members:acme:vip"]
    assert args == ["0", b"{}", "acme:vip", "acme"]
    assert command(NS, "0", RuleWrite("acme", "vip", None), fence=True)[2][1] == b""


def test_membership_records() -> None:
    assert decode_change(ANN.to_bytes()) == ANN
    assert write_from_change(ANN).state == member_state(ANN)
    left = dataclasses.replace(ANN, change="left")
    assert write_from_change(left).state is None
    for raw in [None, b"nope", b"[]", b"{}", ANN.to_bytes().replace(b'"joined"', b'"moved"'),
                ANN.to_bytes().replace(b'"acme"', b"7"),
                ANN.to_bytes().replace(b'{"v":1,', b'{"v":2,')]:
        with pytest.raises(RecordError):
            decode_change(raw)
    for bad in [{"account_id": "a:b"}, {"segment_id": "has space"}, {"email": "Ann@x.com"},
                {"email": ""}, {"email": "ann\x00@x.com"}, {"email": "no-at-x.com"}]:
        with pytest.raises(RecordError) as refused:
            write_from_change(dataclasses.replace(ANN, **bad))
        assert "x.com" not in str(refused.value)  # logged as a warning: names no one


def test_members_and_rules_records() -> None:
    key = member_key("acme", "vip", "ann@example.com")
    assert write_from_member_record(key, member_state(ANN)) == MemberWrite(
        "acme", "vip", "ann@example.com", member_state(ANN))
    assert write_from_member_record(key, None).state is None
    for k, v in [(None, b"{}"), (b"acme\x1fvip", b"{}"), (key, b"nope"), (key, b"[]"),
                 (key, b'{"v":2}'), (member_key("acme", "v:p", "a@x.com"), None),
                 (b"acme\x1fvip\x1fann@x.com\x1fextra", None)]:
        with pytest.raises(RecordError) as refused:
            write_from_member_record(k, v)
        assert "x.com" not in str(refused.value)
    doc = orjson.dumps({"id": "vip", "account_id": "acme", "name": "VIPs",
                        "filter": "refunded", "conditions": []})
    assert write_from_rule_record(rule_key("acme", "vip"), doc) == RuleWrite(
        "acme", "vip", doc)
    # The read model keeps the rule document: the record's schema version is dropped.
    record = orjson.dumps({"v": 1, **orjson.loads(doc)})
    assert write_from_rule_record(rule_key("acme", "vip"), record) == RuleWrite(
        "acme", "vip", doc)
    assert write_from_rule_record(rule_key("acme", "vip"), None).doc is None
    # A rule failing validation, or naming another segment than its key, is not in
    # force (issue 14): skipped, so the version in force stays shown.
    invalid = doc.replace(b'"refunded"', b'"nope"')
    for k, v in [(None, b"{}"), (b"acme", b"{}"), (rule_key("acme", "vip"), b"[1]"),
                 (rule_key("acme", "vip"), b"{"), (rule_key("acme", "vip"), invalid),
                 (rule_key("acme", "vip"), b'{"id": "vip"}'), (rule_key("acme", "gold"), doc),
                 (rule_key("acme", "vip"), b'{"v":2}')]:
        with pytest.raises(RecordError):
            write_from_rule_record(k, v)


@pytest.mark.parametrize("email", ["ann@example.com", "zoë+tag@exämple.org", "a@b"])
def test_cursor_round_trip(email: str) -> None:
    cursor = encode_cursor(email)
    assert "=" not in cursor
    assert decode_cursor(cursor) == email


@pytest.mark.parametrize("cursor", ["%%%", "Zm9v", "//8", "a"])
def test_bad_cursors(cursor: str) -> None:
    with pytest.raises(BadCursor):
        decode_cursor(cursor)


def _request(query: str) -> object:
    return make_mocked_request("GET", "/segments/vip/members?" + query)


def test_query_parameters() -> None:
    assert limit_param(_request("")) == 100  # type: ignore[arg-type]
    assert limit_param(_request("limit=1000")) == 1000  # type: ignore[arg-type]
    for bad in ["limit=0", "limit=1001", "limit=-1", "limit=1.5", "limit=x"]:
        with pytest.raises(ApiError) as caught:
            limit_param(_request(bad))  # type: ignore[arg-type]
        assert caught.value.status == 400
        assert "limit must be an integer from 1 to 1000" in caught.value.message
    assert account_param(_request("account_id=")) is None  # type: ignore[arg-type]
    assert account_param(_request("account_id=acme")) == "acme"  # type: ignore[arg-type]
    with pytest.raises(ApiError):
        account_param(_request("account_id=a%20b"))  # type: ignore[arg-type]
    with pytest.raises(ApiError):
        id_param("x" * 129, "segment_id")
    cursor = encode_cursor("ann@example.com")
    assert cursor_param(_request("cursor=" + cursor)) == "ann@example.com"  # type: ignore[arg-type]
    with pytest.raises(ApiError):
        cursor_param(_request("cursor=bad"))  # type: ignore[arg-type]


def test_feed_events() -> None:
    event = change_event(ANN, 7, 42)
    assert event == {"type": "change", "account_id": "acme", "segment_id": "vip",
                     "email": "ann@example.com", "change": "joined", "cause": "fact",
                     "at": "2026-11-26T23:00:00Z", "fact_id": "re_1", "rule_version": 2,
                     "member_count": 7, "seq": 42}
    message = sse_message(event)
    assert message.startswith(b"event: change\ndata: {")
    assert message.endswith(b"}\n\n")
    assert message.count(b"\n") == 3  # JSON on one line
    assert rule_event("acme", "vip", None, 0, 43)["rule"] is None


async def test_subscription_overflow_closes_it() -> None:
    sub = Subscription(limit=2)
    sub.push({"n": 1})
    sub.push({"n": 2})
    assert await sub.next_events(1) == [{"n": 1}, {"n": 2}]
    assert await sub.next_events(0.01) == []
    for n in range(3):
        sub.push({"n": n})
    assert sub.overflowed
    assert await sub.next_events(1) is None


async def test_feed_fans_out_and_drops_slow_streams() -> None:
    metrics = ServingMetrics()
    feed = ChangeFeed(redis=None, channel="c", metrics=metrics, queue_limit=3)
    with feed.subscribe() as fast, feed.subscribe() as slow:
        feed.dispatch(orjson.dumps([{"n": 1}, {"n": 2}]))
        assert await fast.next_events(1) == [{"n": 1}, {"n": 2}]
        feed.dispatch(orjson.dumps([{"n": 3}, {"n": 4}]))
        assert await slow.next_events(1) is None  # 4 waiting > 3: closed
        assert await fast.next_events(1) == [{"n": 3}, {"n": 4}]
        assert metrics.feed_dropped._value.get() == 1
        feed.dispatch(b"not json")  # ignored
        feed.close()
        assert await fast.next_events(1) is None
    assert metrics.feed_subscribers._value.get() == 0
