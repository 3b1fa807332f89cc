"""Rules over HTTP: create, replace and delete a segment's rule (query API).

    PUT    /accounts/{account_id}/segments/{segment_id}   201 created, 200 replaced
    DELETE /accounts/{account_id}/segments/{segment_id}   204, 404 when there is none

The body of a PUT is a rule (SPEC "A rule"); its `id` and `account_id` may be left out
and, when given, must match the path. `If-Match: <version>` (bare or quoted) makes the
write conditional: 409 unless that version is in force. An invalid rule is answered 422
`{"errors": [{"path": JSON Pointer, "message": ...}]}` listing every problem, and
nothing is published. Either write answers once the record is committed on
`segments.rules` (`serving.rules_store`, which also owns the version). Reads (`GET`)
are the read model's (`serving.api`), which follows the topic within moments.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

from aiohttp import web
from aiokafka.errors import KafkaError

from common.http import expect_handler, json_response
from common.settings import Settings
from rules import FieldError, RuleError, parse_rule
from serving.api import ApiError, id_param, path_account
from serving.rules_store import (
    ReadTimeout,
    RuleNotFound,
    VersionConflict,
    delete_rule,
    put_rule,
)

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)


def add_routes(app: web.Application, settings: Settings) -> None:
    app[SETTINGS] = settings
    path = "/accounts/{account_id}/segments/{segment_id}"
    app.router.add_put(path, put_segment, expect_handler=expect_handler)
    app.router.add_delete(path, delete_segment, expect_handler=expect_handler)


def invalid(errors: list[FieldError]) -> web.Response:
    return json_response({"errors": [error.to_dict() for error in errors]}, 422)


def if_match(request: web.Request) -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    text = raw.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or not 1 <= int(text) <= 2**53:
        raise ApiError(400, f"If-Match must be a rule version, e.g. If-Match: 3 (got {raw!r})")
    return int(text)


def unavailable(exc: Exception) -> ApiError:
    log.warning("rules topic unavailable: %s", type(exc).__name__)
    return ApiError(503, "segments.rules is unavailable; the write may not have been stored: "
                         "read the segment and retry")


def etag(version: int) -> dict[str, str]:
    return {"ETag": f'"{version}"'}


def _path(request: web.Request) -> tuple[str, str]:
    account_id = path_account(request)
    return account_id, id_param(request.match_info["segment_id"], "segment_id")


async def _document(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise ApiError(415, "Content-Type must be application/json")
    raw = await request.read()
    try:
        return json.loads(raw, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:
        raise RuleError([FieldError("", f"not JSON: {exc}")]) from None


def _rule_of(doc: Any, account_id: str, segment_id: str) -> Any:
    """The rule `doc` names, its ids taken from the path; RuleError listing every problem
    (ids that contradict the path included)."""
    if not isinstance(doc, dict):
        return parse_rule(doc)  # raises, naming what the document is
    mismatches = [
        FieldError(f"/{key}", f"must be {value!r} as in the path, or left out (got {doc[key]!r})")
        for key, value in (("id", segment_id), ("account_id", account_id))
        if key in doc and doc[key] != value
    ]
    # The API owns the version: one given in the body is ignored, as the CLI does.
    complete = {**{k: v for k, v in doc.items() if k != "version"},
                "id": segment_id, "account_id": account_id}
    try:
        rule = parse_rule(complete)
    except RuleError as exc:
        raise RuleError(mismatches + exc.errors) from None
    if mismatches:
        raise RuleError(mismatches)
    return rule


async def put_segment(request: web.Request) -> web.Response:
    account_id, segment_id = _path(request)
    expected = if_match(request)
    try:
        rule = _rule_of(await _document(request), account_id, segment_id)
    except RuleError as exc:
        return invalid(exc.errors)
    try:
        stored = await put_rule(request.app[SETTINGS], rule, expected)
    except VersionConflict as exc:
        raise ApiError(409, str(exc)) from None
    except (KafkaError, ReadTimeout) as exc:
        raise unavailable(exc) from None
    response = json_response(stored.rule.to_dict(), 201 if stored.created else 200)
    response.headers.update(etag(stored.rule.version))
    return response


async def delete_segment(request: web.Request) -> web.Response:
    account_id, segment_id = _path(request)
    expected = if_match(request)
    try:
        await delete_rule(request.app[SETTINGS], account_id, segment_id, expected)
    except RuleNotFound:
        raise ApiError(404, f"segment {segment_id!r} not found in account "
                            f"{account_id!r}") from None
    except VersionConflict as exc:
        raise ApiError(409, str(exc)) from None
    except (KafkaError, ReadTimeout) as exc:
        raise unavailable(exc) from None
    return web.Response(status=204)
