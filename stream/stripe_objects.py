"""Shape-tolerant, type-strict readers for Stripe objects inside events.

One Stripe account's events mix API versions (SPEC, "Facts about Stripe"), so a field
may be a string id or an expanded object, a list object (`{"data": [...]}`) or a legacy
bare array, or simply absent. These readers accept every shape Stripe has used and
reject everything else with `ClassifyError`, the single error of classification: the
stream sends such an event to the dead-letter topic with `str(error)` as the reason.

Two levels of strictness, on purpose:
- Fields that decide a fact (ids, amounts, currencies, dates, flags) are strict: a
  value of the wrong type raises. Money is an `int` of minor units or nothing; a float
  or a string amount is never guessed at, and `bool` (an `int` subclass) is refused.
- Email sources are lenient: an odd email field is just not a candidate, since the
  contact can still be found from the Stripe customer later.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from stream.errors import StreamError
from stream.facts import normalize_email

JsonObj = dict[str, Any]


class ClassifyError(StreamError, ValueError):
    """A Stripe event of a needed type that cannot be understood."""


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def need_dict(value: object, where: str) -> JsonObj:
    if not isinstance(value, dict):
        raise ClassifyError(f"{where} is {_kind(value)}, expected an object")
    return value


def opt_dict(obj: JsonObj, key: str, where: str) -> JsonObj | None:
    value = obj.get(key)
    if value is None:
        return None
    return need_dict(value, f"{where}.{key}")


def opt_str(obj: JsonObj, key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ClassifyError(f"{where}.{key} is {_kind(value)}, expected a string")


def need_str(obj: JsonObj, key: str, where: str) -> str:
    value = opt_str(obj, key, where)
    if not value:
        raise ClassifyError(f"{where}.{key} is missing")
    return value


def opt_int(obj: JsonObj, key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ClassifyError(f"{where}.{key} is {_kind(value)}, expected an integer")
    return value


def need_int(obj: JsonObj, key: str, where: str) -> int:
    value = opt_int(obj, key, where)
    if value is None:
        raise ClassifyError(f"{where}.{key} is missing")
    return value


def opt_bool(obj: JsonObj, key: str, where: str) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise ClassifyError(f"{where}.{key} is {_kind(value)}, expected a boolean")


def currency(obj: JsonObj, where: str, *, required: bool = True) -> str | None:
    """ISO code, lower-cased (Stripe sends lower case; older payloads not always)."""
    code = opt_str(obj, "currency", where)
    if code:
        return code.strip().lower()
    if required:
        raise ClassifyError(f"{where}.currency is missing")
    return None


def ref_id(obj: JsonObj, key: str, where: str) -> str | None:
    """The id behind an expandable field: `"ch_1"` or `{"id": "ch_1", ...}` alike."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        return need_str(value, "id", f"{where}.{key}")
    raise ClassifyError(f"{where}.{key} is {_kind(value)}, expected an id or an object")


def expanded(obj: JsonObj, key: str, where: str) -> JsonObj | None:
    """The object behind an expandable field when Stripe expanded it, else None."""
    ref_id(obj, key, where)  # validates the shape
    value = obj.get(key)
    return value if isinstance(value, dict) else None


def list_items(obj: JsonObj, key: str, where: str) -> list[JsonObj] | None:
    """Items of a list field: a list object `{"data": [...]}` or a pre-2014 bare array.

    None when the field is absent: since API 2022-11-15 a charge's `refunds` is not
    included at all, which is different from an empty list.
    """
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, dict):
        if "data" not in value:
            return None  # a list header without its page (e.g. a previous_attributes diff)
        value = value["data"]
    if not isinstance(value, list):
        raise ClassifyError(f"{where}.{key} is {_kind(value)}, expected a list")
    return [need_dict(item, f"{where}.{key}[{i}]") for i, item in enumerate(value)]


def newest(items: Iterable[JsonObj], where: str) -> JsonObj | None:
    """The most recently created item; on ties (or no dates) the first, as Stripe lists
    newest first."""
    best: JsonObj | None = None
    best_at = -1
    for item in items:
        at = opt_int(item, "created", where)
        if best is None or (at is not None and at > best_at):
            best, best_at = item, at if at is not None else -1
    return best


_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")


def api_version(event: JsonObj) -> str | None:
    """The date part of the event's `api_version` ("2024-10-28.acacia" → "2024-10-28").

    None for pre-2014 events, which carry no version, and for anything unparseable.
    """
    raw = event.get("api_version")
    if isinstance(raw, str) and _VERSION.match(raw):
        return raw[:10]
    return None


def emails(*sources: tuple[JsonObj | None, str]) -> tuple[str, ...]:
    """Normalized, distinct emails from `(object, key)` pairs, in the order given."""
    found: list[str] = []
    for obj, key in sources:
        if isinstance(obj, dict):
            email = normalize_email(obj.get(key))
            if email and email not in found:
                found.append(email)
    return tuple(found)


def sub(obj: JsonObj | None, key: str) -> JsonObj | None:
    """A nested object for email look-ups only: lenient, anything else is None."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else None
