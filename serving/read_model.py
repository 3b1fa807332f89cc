"""The Redis read model: key layout and idempotent writes.

Every write sets a state, never increments one (the seq below is bookkeeping), so
applying the same records again, in the same order, leaves the same picture.
Membership and counts are one sorted set per segment (count = ZCARD), so a count
can never drift from its members.

Keys, for prefix `p` (the topic prefix) and generation `g`:

    p + "seg:current"                      generation being served (absent: "0")
    p + "seg:seq"                          counter: every write takes the next number
                                           (starts at the clock in microseconds, so it
                                           keeps increasing even if Redis loses it)
    p + "seg:replay"                       HASH "topic:partition" -> offset to replay from
    p + "seg:feed"                         pub/sub channel of applied changes
    p + "seg:g:segments"                   SET  "account:segment" of every known segment
    p + "seg:g:accounts:segment"           SET  accounts that have this segment id
    p + "seg:g:members:account:segment"    ZSET emails, all score 0 (lexicographic pages)
    p + "seg:g:state:account:segment"      HASH email -> member state JSON (as on
                                                `segments.members`)
    p + "seg:g:rule:account:segment"       STRING the rule document (`segments.rules`)
    p + "seg:g:contact:account:email"      SET  segment ids the contact is a member of
    p + "seg:g:seqs"                       HASH "account:segment" -> seq of its last write

The seq orders the feed's events against a snapshot (the web page keeps an event only
if it is newer than what it shows); it is bookkeeping, not state, and is the only thing
a replay changes.

Ids are `[A-Za-z0-9._-]`, so ":" separates them without ambiguity; records with other
ids are rejected at decoding. A rebuild writes a whole new generation and switches
`seg:current` in one step; the live writer passes the generation it writes for, and the
scripts refuse (return FENCED) once another one is current (see read_model_agent).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson

from common.emails import normalize_email
from common.ids import valid_id as valid_id  # re-exported for callers of old
from common.keys import MalformedKey, split
from common.records import VERSION_FIELD, UnsupportedRecordVersion, record_version
from rules import RuleError, parse_rule
from serving.errors import ServingError
from stream.changes import MembershipChange, member_state, rule_document, split_member_key

#: What a fenced write returns instead of the segment's member count.
FENCED: Final = -1
#: The generation served before any rebuild (and after Redis lost everything).
INITIAL_GENERATION: Final = "0"

class RecordError(ServingError, ValueError):
    """A record on a read-model input topic does not follow its contract."""


@dataclass(frozen=True, slots=True)
class Namespace:
    """The read model's keys for one topic prefix."""

    prefix: str

    @property
    def current(self) -> str:
        return f"{self.prefix}seg:current"

    @property
    def replay(self) -> str:
        return f"{self.prefix}seg:replay"

    @property
    def feed(self) -> str:
        return f"{self.prefix}seg:feed"

    @property
    def seq(self) -> str:
        return f"{self.prefix}seg:seq"

    def seqs(self, gen: str) -> str:
        return f"{self.prefix}seg:{gen}:seqs"

    def segments(self, gen: str) -> str:
        return f"{self.prefix}seg:{gen}:segments"

    def accounts(self, gen: str, segment_id: str) -> str:
        return f"{self.prefix}seg:{gen}:accounts:{segment_id}"

    def members(self, gen: str, account_id: str, segment_id: str) -> str:
        return f"{self.prefix}seg:{gen}:members:{account_id}:{segment_id}"

    def state(self, gen: str, account_id: str, segment_id: str) -> str:
        return f"{self.prefix}seg:{gen}:state:{account_id}:{segment_id}"

    def rule(self, gen: str, account_id: str, segment_id: str) -> str:
        return f"{self.prefix}seg:{gen}:rule:{account_id}:{segment_id}"

    def contact(self, gen: str, account_id: str, email: str) -> str:
        return f"{self.prefix}seg:{gen}:contact:{account_id}:{email}"

    def generation_pattern(self, gen: str) -> str:
        """SCAN pattern of every key of one generation (glob characters escaped)."""
        return glob_escape(f"{self.prefix}seg:{gen}:") + "*"


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def segment_ref(account_id: str, segment_id: str) -> str:
    return f"{account_id}:{segment_id}"


def split_segment_ref(ref: str) -> tuple[str, str]:
    account_id, _, segment_id = ref.partition(":")
    return account_id, segment_id


@dataclass(frozen=True, slots=True)
class MemberWrite:
    """One member's state in one segment: `state` JSON while a member, None after leaving."""

    account_id: str
    segment_id: str
    email: str
    state: bytes | None


@dataclass(frozen=True, slots=True)
class RuleWrite:
    """A segment's rule document, or None once the rule is deleted."""

    account_id: str
    segment_id: str
    doc: bytes | None


Write = MemberWrite | RuleWrite


class Applied(NamedTuple):
    """What one write left: the segment's member count (or FENCED) and its seq."""

    member_count: int
    seq: int


def _checked_ids(account_id: str, segment_id: str, email: str | None = None) -> None:
    if not valid_id(account_id):
        raise RecordError(f"invalid account_id {account_id!r}")
    if not valid_id(segment_id):
        raise RecordError(f"invalid segment_id {segment_id!r}")
    if email is not None and normalize_email(email) != email:
        raise RecordError("email is not normalized")  # not quoted: it names a person


def write_from_change(change: MembershipChange) -> MemberWrite:
    _checked_ids(change.account_id, change.segment_id, change.email)
    return MemberWrite(change.account_id, change.segment_id, change.email, member_state(change))


def decode_change(value: bytes | None) -> MembershipChange:
    """A `segments.membership` record, validated for the read model."""
    if value is None:
        raise RecordError("membership change without a value")
    try:
        change = MembershipChange.from_bytes(value)
    except (ValueError, TypeError) as exc:  # not JSON, not a change, an unknown "v"
        raise RecordError(f"not a membership change: {exc}") from None
    for name in ("account_id", "segment_id", "email", "at"):
        if not isinstance(getattr(change, name), str):
            raise RecordError(f"{name} must be a string")
    if change.change not in ("joined", "left"):
        raise RecordError(f"unknown change {change.change!r}")
    return change


def write_from_member_record(key: bytes | None, value: bytes | None) -> MemberWrite:
    """A `segments.members` record: the key names the member, a tombstone means left."""
    if key is None:
        raise RecordError("members record without a key")
    try:
        account_id, segment_id, email = split_member_key(key)
    except (UnicodeDecodeError, ValueError):
        raise RecordError("malformed members key") from None  # it may hold an email
    _checked_ids(account_id, segment_id, email)
    if value is not None:
        try:
            state = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise RecordError(f"members value is not JSON: {exc}") from None
        if not isinstance(state, dict):
            raise RecordError("members value is not a JSON object")
        try:
            record_version(state)
        except UnsupportedRecordVersion as exc:
            raise RecordError(str(exc)) from None
    return MemberWrite(account_id, segment_id, email, value)


def write_from_rule_record(key: bytes | None, value: bytes | None) -> RuleWrite:
    """A `segments.rules` record: the key (account, rule id) names the segment."""
    if key is None:
        raise RecordError("rules record without a key")
    try:
        account_id, segment_id = split(key, 2)
    except (UnicodeDecodeError, MalformedKey):
        raise RecordError(f"malformed rules key {key!r}") from None
    _checked_ids(account_id, segment_id)
    if value is not None:
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise RecordError(f"rule document is not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise RecordError("rule document is not a JSON object")
        # The read model keeps (and the API shows) the rule document, not the record.
        try:
            document = rule_document(doc)
        except RuleError as exc:
            raise RecordError(str(exc)) from None
        # A rule that fails validation is not in force (the workers dead-letter it):
        # skipping it keeps the version in force on show (issue 14).
        try:
            rule = parse_rule(document)
        except RuleError as exc:
            raise RecordError(str(exc)) from None
        if (rule.account_id, rule.id) != (account_id, segment_id):
            raise RecordError("rule document names another segment than its key")
        if VERSION_FIELD in doc:
            value = orjson.dumps(document)
    return RuleWrite(account_id, segment_id, value)


# One member's state; returns {member count, seq}, or {FENCED, 0}.
APPLY_MEMBER: Final = """
if ARGV[1] ~= '' and (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return {-1, 0} end
local known = true
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], 0, ARGV[2])
  redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
  redis.call('SADD', KEYS[4], ARGV[4])
  redis.call('SADD', KEYS[6], ARGV[6])
  redis.call('SADD', KEYS[7], ARGV[5])
else
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('HDEL', KEYS[3], ARGV[2])
  redis.call('SREM', KEYS[4], ARGV[4])
  if redis.call('ZCARD', KEYS[2]) == 0 and redis.call('EXISTS', KEYS[5]) == 0 then
    redis.call('SREM', KEYS[6], ARGV[6])
    redis.call('SREM', KEYS[7], ARGV[5])
    known = false
  end
end
if redis.call('EXISTS', KEYS[8]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[8], string.format('%d', now[1] * 1000000 + now[2]))
end
local seq = redis.call('INCR', KEYS[8])
if known then redis.call('HSET', KEYS[9], ARGV[6], seq)
else redis.call('HDEL', KEYS[9], ARGV[6]) end
return {redis.call('ZCARD', KEYS[2]), seq}
"""

# A segment's rule document; returns {member count, seq}, or {FENCED, 0}.
APPLY_RULE: Final = """
if ARGV[1] ~= '' and (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] then return {-1, 0} end
local known = true
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('SADD', KEYS[4], ARGV[3])
  redis.call('SADD', KEYS[5], ARGV[4])
else
  redis.call('DEL', KEYS[2])
  if redis.call('ZCARD', KEYS[3]) == 0 then
    redis.call('SREM', KEYS[4], ARGV[3])
    redis.call('SREM', KEYS[5], ARGV[4])
    known = false
  end
end
if redis.call('EXISTS', KEYS[6]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[6], string.format('%d', now[1] * 1000000 + now[2]))
end
local seq = redis.call('INCR', KEYS[6])
if known then redis.call('HSET', KEYS[7], ARGV[3], seq)
else redis.call('HDEL', KEYS[7], ARGV[3]) end
return {redis.call('ZCARD', KEYS[3]), seq}
"""

# Serve another generation and say where the live writers replay from; returns the old one.
SWITCH_GENERATION: Final = """
local old = redis.call('GET', KEYS[1]) or '0'
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
if #ARGV > 1 then redis.call('HSET', KEYS[2], unpack(ARGV, 2)) end
return old
"""

Command = tuple[str, list[str], list[str | bytes]]


def command(ns: Namespace, gen: str, write: Write, *, fence: bool) -> Command:
    """The script, keys and arguments that apply `write` to generation `gen`.

    With `fence`, the script refuses to write unless `gen` is still the one served.
    """
    fence_arg = gen if fence else ""
    account, segment = write.account_id, write.segment_id
    ref = segment_ref(account, segment)
    if isinstance(write, MemberWrite):
        keys = [
            ns.current,
            ns.members(gen, account, segment),
            ns.state(gen, account, segment),
            ns.contact(gen, account, write.email),
            ns.rule(gen, account, segment),
            ns.segments(gen),
            ns.accounts(gen, segment),
            ns.seq,
            ns.seqs(gen),
        ]
        state = write.state if write.state is not None else b""
        return APPLY_MEMBER, keys, [fence_arg, write.email, state, segment, account, ref]
    keys = [
        ns.current,
        ns.rule(gen, account, segment),
        ns.members(gen, account, segment),
        ns.segments(gen),
        ns.accounts(gen, segment),
        ns.seq,
        ns.seqs(gen),
    ]
    doc = write.doc if write.doc is not None else b""
    return APPLY_RULE, keys, [fence_arg, doc, ref, account]


class ReadModelStore:
    """Applies writes to Redis, many per round trip."""

    def __init__(self, redis: Any, ns: Namespace) -> None:
        self.redis = redis
        self.ns = ns
        self._scripts = {
            text: redis.register_script(text)
            for text in (APPLY_MEMBER, APPLY_RULE, SWITCH_GENERATION)
        }

    async def current_generation(self) -> str:
        raw = await self.redis.get(self.ns.current)
        return INITIAL_GENERATION if raw is None else _text(raw)

    async def apply(
        self, writes: Sequence[Write], gen: str, *, fence: bool = True
    ) -> list[Applied]:
        """The segment's member count and seq after each write, in one pipeline.

        A refused write (fenced) has count FENCED."""
        if not writes:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for write in writes:
                script, keys, args = command(self.ns, gen, write, fence=fence)
                await self._scripts[script](keys=keys, args=args, client=pipe)
            results = await pipe.execute()
        return [Applied(int(count), int(seq)) for count, seq in results]

    async def switch_generation(self, gen: str, replay: dict[str, int]) -> str:
        """Atomically serve `gen` and publish replay offsets; returns the previous one."""
        args: list[str] = [gen]
        for field, offset in sorted(replay.items()):
            args += [field, str(offset)]
        old = await self._scripts[SWITCH_GENERATION](
            keys=[self.ns.current, self.ns.replay], args=args
        )
        return _text(old)

    async def delete_generation(self, gen: str, batch: int = 1000) -> int:
        """UNLINK every key of generation `gen`; returns how many."""
        deleted = 0
        pattern = self.ns.generation_pattern(gen)
        async for chunk in _chunks(self.redis.scan_iter(match=pattern, count=batch), batch):
            deleted += int(await self.redis.unlink(*chunk))
        return deleted


async def _chunks(items: Any, size: int) -> Any:
    chunk: list[Any] = []
    async for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _text(raw: str | bytes) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
