"""Reading the Redis read model: what the query API and `segments members` answer.

Every question is scoped by (account, segment): segment ids are unique only within an
account. Member pages are in email order and the cursor is the last email of the
previous page, so paging never repeats or skips a member that stays in the segment,
whatever joins or leaves meanwhile, and even across a rebuild.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

import orjson

from serving.errors import ServingError
from serving.read_model import (
    INITIAL_GENERATION,
    Namespace,
    segment_ref,
    split_segment_ref,
)


class AmbiguousSegment(ServingError, LookupError):
    """A segment id used by several accounts, asked for without an account."""

    def __init__(self, segment_id: str, accounts: int) -> None:
        super().__init__(
            f"account_id is required: segment {segment_id!r} exists in {accounts} accounts"
        )


class BadCursor(ServingError, ValueError):
    pass


def encode_cursor(email: str) -> str:
    return base64.urlsafe_b64encode(email.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The email a cursor continues after; BadCursor unless this API made it."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        email = raw.decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadCursor("cursor is not one this API returned") from None
    if not email or "@" not in email:
        raise BadCursor("cursor is not one this API returned")
    return email


@dataclass(frozen=True, slots=True)
class Segment:
    account_id: str
    segment_id: str
    rule: dict[str, Any] | None
    member_count: int
    #: Increases with every write to the segment; orders it against feed events.
    seq: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "segment_id": self.segment_id,
            "rule": self.rule,
            "member_count": self.member_count,
            "seq": self.seq,
        }


@dataclass(frozen=True, slots=True)
class MembersPage:
    account_id: str
    segment_id: str
    member_count: int
    members: list[dict[str, Any]] = field(default_factory=list)
    #: Pass back as `cursor` for the next page; None on the last page.
    next_cursor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "segment_id": self.segment_id,
            "member_count": self.member_count,
            "members": self.members,
            "next_cursor": self.next_cursor,
        }


def _text(raw: str | bytes) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw


def _member(email: str, state: bytes | None) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads(state) if state else {}
    return {
        "email": email,
        "since": doc.get("since"),
        "fact_id": doc.get("fact_id"),
        "rule_version": doc.get("rule_version"),
    }


class ReadModelReader:
    def __init__(self, redis: Any, ns: Namespace) -> None:
        self.redis = redis
        self.ns = ns

    async def generation(self) -> str:
        raw = await self.redis.get(self.ns.current)
        return INITIAL_GENERATION if raw is None else _text(raw)

    async def resolve_account(self, segment_id: str, account_id: str | None) -> str | None:
        """The account to answer for: the given one, or the only one using `segment_id`.

        None when no account has the segment; AmbiguousSegment when several do.
        """
        gen = await self.generation()
        if account_id is not None:
            known = await self.redis.sismember(
                self.ns.segments(gen), segment_ref(account_id, segment_id)
            )
            return account_id if known else None
        accounts = await self.redis.smembers(self.ns.accounts(gen, segment_id))
        if len(accounts) > 1:
            raise AmbiguousSegment(segment_id, len(accounts))
        return _text(next(iter(accounts))) if accounts else None

    async def segment(self, account_id: str, segment_id: str) -> Segment | None:
        gen = await self.generation()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sismember(self.ns.segments(gen), segment_ref(account_id, segment_id))
            pipe.get(self.ns.rule(gen, account_id, segment_id))
            pipe.zcard(self.ns.members(gen, account_id, segment_id))
            pipe.hget(self.ns.seqs(gen), segment_ref(account_id, segment_id))
            known, rule, count, seq = await pipe.execute()
        if not known:
            return None
        return Segment(
            account_id, segment_id, orjson.loads(rule) if rule else None, int(count), int(seq or 0)
        )

    async def last_seq(self) -> int:
        """The seq of the latest write: every write up to it is visible to reads after."""
        raw = await self.redis.get(self.ns.seq)
        return int(raw or 0)

    async def segments(self, account_id: str | None = None) -> list[Segment]:
        """Every known segment (of one account, if given), by account then id."""
        gen = await self.generation()
        refs = sorted(
            split_segment_ref(_text(r)) for r in await self.redis.smembers(self.ns.segments(gen))
        )
        if account_id is not None:
            refs = [r for r in refs if r[0] == account_id]
        if not refs:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for account, segment in refs:
                pipe.get(self.ns.rule(gen, account, segment))
                pipe.zcard(self.ns.members(gen, account, segment))
                pipe.hget(self.ns.seqs(gen), segment_ref(account, segment))
            replies = await pipe.execute()
        return [
            Segment(account, segment, orjson.loads(rule) if rule else None, int(count),
                    int(seq or 0))
            for (account, segment), rule, count, seq in zip(
                refs, replies[0::3], replies[1::3], replies[2::3], strict=True
            )
        ]

    async def members_page(
        self, account_id: str, segment_id: str, after: str | None, limit: int
    ) -> MembersPage:
        """Up to `limit` members in email order, after the email `after` (exclusive)."""
        gen = await self.generation()
        members_key = self.ns.members(gen, account_id, segment_id)
        low = "-" if after is None else "(" + after
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrangebylex(members_key, low, "+", start=0, num=limit + 1)
            pipe.zcard(members_key)
            raw_emails, count = await pipe.execute()
        emails = [_text(e) for e in raw_emails]
        more = len(emails) > limit
        emails = emails[:limit]
        states: list[bytes | None] = []
        if emails:
            states = await self.redis.hmget(self.ns.state(gen, account_id, segment_id), emails)
        return MembersPage(
            account_id,
            segment_id,
            int(count),
            [_member(email, state) for email, state in zip(emails, states, strict=True)],
            encode_cursor(emails[-1]) if more else None,
        )

    async def contact_segments(self, account_id: str, email: str) -> list[dict[str, Any]]:
        """The segments of one contact of one account, by segment id."""
        gen = await self.generation()
        segment_ids = sorted(
            _text(s) for s in await self.redis.smembers(self.ns.contact(gen, account_id, email))
        )
        if not segment_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for segment_id in segment_ids:
                pipe.hget(self.ns.state(gen, account_id, segment_id), email)
            states = await pipe.execute()
        result = []
        for segment_id, state in zip(segment_ids, states, strict=True):
            member = _member(email, state)
            result.append(
                {
                    "segment_id": segment_id,
                    "since": member["since"],
                    "fact_id": member["fact_id"],
                    "rule_version": member["rule_version"],
                }
            )
        return result
