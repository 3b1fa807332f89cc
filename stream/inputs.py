"""What the worker accepts as input, decided before any state is touched.

Only input errors are bad input (issue 14). Each input record of the membership side is
decoded and checked here first, raising one of `INPUT_ERRORS` if it breaks its topic's
contract; the pipeline dead-letters those (with the reason) and changes nothing. Only
then does the membership logic run on the decoded record, and anything it raises is a
bug of ours: it stops the worker, whose open transaction is aborted, so under
exactly-once the batch is processed again, from the committed state, once fixed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from common.ids import valid_id
from common.keys import MalformedKey, split
from connectors.contract import ContractError
from rules import Rule, RuleError
from rules.vocabulary import FILTERS
from stream.classify import ClassifyError
from stream.erasure import FORGET, ForgetRequest
from stream.errors import StreamError
from stream.facts import Fact, FactDecodeError
from stream.partition_state import rule_from_doc
from stream.state import compact

DAY = 24 * 3600
#: How far ahead of the worker's clock an event may be dated (clock skew); later ones
#: are dead-lettered, so nothing dated in the future is held for ever.
MAX_FUTURE_SECONDS = DAY


class ControlDecodeError(StreamError, ValueError):
    """A `segments.control` message (or a `segments.rules` record) breaks its format."""


class FutureEventError(StreamError, ValueError):
    """An event or fact dated more than `MAX_FUTURE_SECONDS` after the worker's clock."""


class InvalidRuleError(ControlDecodeError):
    """A rule document on `segments.rules` that fails validation."""


#: The exceptions of input that breaks its contract: dead-lettered, never fatal.
INPUT_ERRORS: tuple[type[Exception], ...] = (
    FactDecodeError, ControlDecodeError, FutureEventError, RuleError, MalformedKey,
    ContractError, ClassifyError, orjson.JSONDecodeError, UnicodeDecodeError)

_OPTIONALint = ("amount", "refund_amount", "start_date", "end_date")
_OPTIONALstr = ("customer_id", "currency")


def check_future(created: object, now: int, what: str) -> None:
    """`FutureEventError` if `created` lies more than a day after `now`."""
    if _is_int(created) and created > now + MAX_FUTURE_SECONDS:  # type: ignore[operator]
        raise FutureEventError(f"{what} dated {created}, more than a day after the "
                               f"worker's clock ({now})")


def decode_fact(raw: bytes | None, now: int) -> Fact:
    """A `stripe.facts` record as a `Fact`, every field of the type the logic expects."""
    if raw is None:
        raise FactDecodeError("fact without a value")
    fact = Fact.from_bytes(raw)
    if not _well_typed(fact) and (problems := _problems(fact)):
        raise FactDecodeError("; ".join(problems))
    check_future(fact.occurred_at, now, f"fact {fact.fact_id}")
    return fact


def _well_typed(fact: Fact) -> bool:
    """Every field of the type the logic expects: the common case, decided in one
    expression (the fact's fields are checked for every fact a worker reads);
    `_problems` says what is wrong otherwise."""
    t = type
    return (t(fact.fact_id) is str and fact.fact_id != ""
            and t(fact.account_id) is str and valid_id(fact.account_id)
            and t(fact.connection_id) is str and fact.connection_id != ""
            and t(fact.email) is str and fact.email != ""
            and fact.filter in FILTERS
            and t(fact.occurred_at) is int
            and (fact.amount is None or t(fact.amount) is int)
            and (fact.refund_amount is None or t(fact.refund_amount) is int)
            and (fact.start_date is None or t(fact.start_date) is int)
            and (fact.end_date is None or t(fact.end_date) is int)
            and (fact.customer_id is None or t(fact.customer_id) is str)
            and (fact.currency is None or t(fact.currency) is str)
            and (not fact.plans or all(t(plan) is str for plan in fact.plans))
            and t(fact.source_event_id) is str and t(fact.source_event_type) is str
            and t(fact.retracted) is bool)


def _problems(fact: Fact) -> list[str]:
    problems: list[str] = []
    for name in ("fact_id", "account_id", "connection_id", "email"):
        value = getattr(fact, name)
        if not isinstance(value, str) or not value:
            problems.append(f"{name} must be a non-empty string")
    if fact.filter not in FILTERS:
        problems.append(f"unknown filter {fact.filter!r}")
    if isinstance(fact.account_id, str) and fact.account_id and not valid_id(fact.account_id):
        problems.append("account_id is not an account id")
    if not _is_int(fact.occurred_at):
        problems.append("occurred_at must be an integer")
    for name in _OPTIONALint:
        value = getattr(fact, name)
        if value is not None and not _is_int(value):
            problems.append(f"{name} must be an integer or null")
    for name in _OPTIONALstr:
        value = getattr(fact, name)
        if value is not None and not isinstance(value, str):
            problems.append(f"{name} must be a string or null")
    if not all(isinstance(plan, str) for plan in fact.plans):
        problems.append("plans must be strings")
    for name in ("source_event_id", "source_event_type"):
        if not isinstance(getattr(fact, name), str):
            problems.append(f"{name} must be a string")
    if not isinstance(fact.retracted, bool):
        problems.append("retracted must be true or false")
    return problems


@dataclass(frozen=True, slots=True)
class RuleChange:
    """A rule change for one partition: `raw` and `rule` are None for a deletion."""

    key: str
    account_id: str
    rule_id: str
    raw: bytes | None
    rule: Rule | None
    #: When the rule changed (the worker's clock when it was fanned out), epoch seconds.
    at: int | None


def checked_rule(key: str, doc: Any) -> tuple[bytes | None, Rule | None]:
    """A rule document as the partitions keep it (exact bytes) and parsed; for a rule
    record whose key names (account, rule id). `InvalidRuleError` with every reason."""
    account_id, rule_id = split(key, 2)
    if doc is None:
        return None, None
    raw = compact(orjson.dumps(doc))
    try:
        rule = rule_from_doc(raw)
    except RuleError as exc:
        raise InvalidRuleError(str(exc)) from None
    if (rule.account_id, rule.id) != (account_id, rule_id):
        raise InvalidRuleError(f"rule names {rule.account_id}/{rule.id} but its key "
                               f"names {account_id}/{rule_id}")
    return raw, rule


def decode_control(raw: bytes | None) -> RuleChange | ForgetRequest | None:
    """A `segments.control` message: a rule change, an erasure (`stream.erasure`), or
    None for one to ignore (the "tick" messages of earlier versions: the runtime ticks
    itself)."""
    if raw is None:
        raise ControlDecodeError("control message without a value")
    doc = orjson.loads(raw)
    if not isinstance(doc, dict):
        raise ControlDecodeError("control message is not a JSON object")
    if doc.get("k") == FORGET:
        try:
            return ForgetRequest.from_control(doc)
        except (KeyError, ValueError) as exc:
            raise ControlDecodeError(f"malformed erasure record: {exc}") from None
    if doc.get("k") != "rule":
        return None
    key, at = doc.get("key"), doc.get("at")
    if not isinstance(key, str):
        raise ControlDecodeError("rule control message without a key")
    if at is not None and not _is_int(at):
        raise ControlDecodeError("rule control message with a non-integer 'at'")
    account_id, rule_id = split(key, 2)
    rule_raw, rule = checked_rule(key, doc.get("doc"))
    return RuleChange(key, account_id, rule_id, rule_raw, rule, at)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
