"""`GET /openapi.json`: the OpenAPI 3.1 document of every route of the query API.

Built here from the same vocabulary the code uses: the rule's schema is
`rules/schema.json` (JSON Schema 2020-12, which OpenAPI 3.1 schemas are), its `$defs`
moved under `components/schemas`. `tests/integration/test_openapi.py` checks that every
route the application registers is described and validates real answers of each route
against the response schemas here.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from aiohttp import web

from common.http import json_response
from rules.schema import build_schema as rule_schema

ID = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"}
ISO_TIME = {"type": "string", "format": "date-time"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _moved_refs(node: Any) -> Any:
    """`#/$defs/x` refs of the rule schema, pointed at `#/components/schemas/x`."""
    if isinstance(node, dict):
        return {k: (v.replace("#/$defs/", "#/components/schemas/") if k == "$ref"
                    and isinstance(v, str) else _moved_refs(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_moved_refs(v) for v in node]
    return node


def _rule_schemas() -> dict[str, Any]:
    rule = _moved_refs(copy.deepcopy(rule_schema()))
    defs = rule.pop("$defs", {})
    for key in ("$schema", "$id"):
        rule.pop(key, None)
    stored = {**rule, "required": [*rule["required"], "timezone", "version"]}
    given = {**rule, "required": [k for k in rule["required"] if k not in ("id", "account_id")],
             "description": "A rule to store; id and account_id may be left out (the path "
                            "names them), a version is ignored (the API assigns it)."}
    return {"Rule": stored, "RuleInput": given, **defs}


def _obj(required: list[str], properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties, **extra}


def _schemas() -> dict[str, Any]:
    member_state = {"since": {"type": ["string", "null"]},
                    "fact_id": {"type": ["string", "null"]},
                    "rule_version": {"type": ["integer", "null"]}}
    return {
        **_rule_schemas(),
        "Error": _obj(["error"], {"error": {"type": "string"}}),
        "ValidationErrors": _obj(["errors"], {"errors": {
            "type": "array", "minItems": 1, "items": _obj(
                ["path", "message"],
                {"path": {"type": "string", "description": "JSON Pointer ('' = the rule)"},
                 "message": {"type": "string"}}, additionalProperties=False)}},
            additionalProperties=False),
        "Segment": _obj(
            ["account_id", "segment_id", "rule", "member_count", "seq", "status"],
            {"account_id": ID, "segment_id": ID,
             "rule": {"oneOf": [ref("Rule"), {"type": "null"}],
                      "description": "The rule in force (null: deleted, members leaving)"},
             "member_count": {"type": "integer", "minimum": 0},
             "seq": {"type": "integer", "description": "Orders it against /events"},
             "status": {"enum": ["populating", "ready"],
                        "description": "ready once every partition computed the rule in "
                                       "force from the history it holds"}},
            additionalProperties=False),
        "Segments": _obj(["segments", "seq"], {
            "segments": {"type": "array", "items": ref("Segment")},
            "seq": {"type": "integer"}}, additionalProperties=False),
        "MembersPage": _obj(
            ["account_id", "segment_id", "member_count", "members", "next_cursor"],
            {"account_id": ID, "segment_id": ID,
             "member_count": {"type": "integer", "minimum": 0},
             "members": {"type": "array", "items": _obj(
                 ["email", "since", "fact_id", "rule_version"],
                 {"email": {"type": "string"}, **member_state}, additionalProperties=False)},
             "next_cursor": {"type": ["string", "null"]}}, additionalProperties=False),
        "ContactSegments": _obj(["account_id", "email", "segments"], {
            "account_id": ID, "email": {"type": "string"},
            "segments": {"type": "array", "items": _obj(
                ["segment_id", "since", "fact_id", "rule_version"],
                {"segment_id": ID, **member_state}, additionalProperties=False)}},
            additionalProperties=False),
        "Preview": _obj(["count", "sample", "as_of"], {
            "count": {"type": "integer", "minimum": 0,
                      "description": "Members the rule would have if saved at as_of"},
            "sample": {"type": "array", "maxItems": 20, "items": {"type": "string"}},
            "as_of": {"type": "string", "format": "date-time"}}, additionalProperties=False),
        "Explanation": _obj(
            ["account_id", "segment_id", "email", "member", "since", "facts",
             "next_change_at"],
            {"account_id": ID, "segment_id": ID, "email": {"type": "string"},
             "member": {"type": "boolean"}, "since": {"type": ["string", "null"]},
             "facts": {"type": "array", "items": _obj(
                 ["fact_id", "filter", "occurred_at", "stripe_event_ids", "qualifies",
                  "failed_conditions"],
                 {"fact_id": {"type": "string"}, "filter": {"type": "string"},
                  "occurred_at": {"type": "string"},
                  "stripe_event_ids": {"type": "array", "items": {"type": "string"}},
                  "qualifies": {"type": "boolean"},
                  "failed_conditions": {"type": "array",
                                        "items": {"type": "integer", "minimum": 0}}})},
             "next_change_at": {"type": ["string", "null"]}}, additionalProperties=False),
        "Health": _obj(["status"], {"status": {"enum": ["ok", "unavailable"]},
                                    "redis": {"type": "string"}}),
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(ref("Error"), description)


def _param(name: str, where: str, schema: dict[str, Any], description: str,
           required: bool = True) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema,
            "description": description}


ACCOUNT = _param("account_id", "path", ID, "An account the token allows (else 404)")
SEGMENT = _param("segment_id", "path", ID, "The segment (its rule's id)")
IF_MATCH = _param("If-Match", "header", {"type": "string", "pattern": '^(W/)?"?[0-9]+"?$'},
                  "Only if this rule version is in force (else 409)", required=False)
UNAUTHORIZED = {"description": "No valid bearer token (WWW-Authenticate: Bearer)",
                "content": {"application/json": {"schema": ref("Error")}}}
COMMON = {"401": UNAUTHORIZED, "400": _error("A malformed parameter")}


def _op(summary: str, responses: dict[str, Any], params: list[dict[str, Any]] | None = None,
        *, open_: bool = False, **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": params or [],
                          "responses": responses if open_ else {**COMMON, **responses}}
    if open_:
        op["security"] = []
    return {**op, **extra}


def _paths() -> dict[str, Any]:
    etag = {"ETag": {"schema": {"type": "string"}, "description": "The rule version, quoted"}}
    stored = {"description": "", "headers": etag,
              "content": {"application/json": {"schema": ref("Rule")}}}
    rule_body = {"required": True, "content": {"application/json": {"schema": ref("RuleInput")}}}
    return {
        "/segments": {"get": _op(
            "Every account's segments (segments:admin scope only)",
            {"200": _json(ref("Segments"), "The segments"),
             "403": _error("Not the admin")},
            [_param("account_id", "query", ID, "Only this account's", required=False)])},
        "/accounts/{account_id}/segments": {"get": _op(
            "The account's segments: rule in force, member count, status",
            {"200": _json(ref("Segments"), "The segments"), "404": _error("Unknown account")},
            [ACCOUNT])},
        "/accounts/{account_id}/segments/{segment_id}": {
            "get": _op("A segment: rule in force, member count, status",
                       {"200": _json(ref("Segment"), "The segment"),
                        "404": _error("Unknown segment or account")}, [ACCOUNT, SEGMENT]),
            "put": _op(
                "Create or replace the segment's rule; answers once it is committed on "
                "segments.rules",
                {"201": {**stored, "description": "Created (version 1)"},
                 "200": {**stored, "description": "Replaced (previous version + 1)"},
                 "404": _error("Unknown account"),
                 "409": _error("If-Match is not the version in force"),
                 "415": _error("Not application/json"),
                 "422": _json(ref("ValidationErrors"), "Invalid rule: every problem; "
                                                       "nothing published"),
                 "503": _error("Kafka unavailable")},
                [ACCOUNT, SEGMENT, IF_MATCH], requestBody=rule_body),
            "delete": _op("Delete the segment's rule (its members leave)",
                          {"204": {"description": "Deleted"},
                           "404": _error("No such segment"),
                           "409": _error("If-Match is not the version in force"),
                           "503": _error("Kafka unavailable")},
                          [ACCOUNT, SEGMENT, IF_MATCH]),
        },
        "/accounts/{account_id}/segments/{segment_id}/members": {"get": _op(
            "The segment's members, in email order, paged",
            {"200": _json(ref("MembersPage"), "A page"),
             "404": _error("Unknown segment or account")},
            [ACCOUNT, SEGMENT,
             _param("cursor", "query", {"type": "string"}, "next_cursor of the last page",
                    required=False),
             _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000},
                    "Page size (default 100)", required=False)])},
        "/accounts/{account_id}/contacts/{email}/segments": {"get": _op(
            "The segments a contact is a member of",
            {"200": _json(ref("ContactSegments"), "Its segments"),
             "404": _error("Unknown account")},
            [ACCOUNT, _param("email", "path", {"type": "string"}, "The contact's email")])},
        "/accounts/{account_id}/segments/preview": {"post": _op(
            "Exactly how many members a rule would have if saved now, and a sample; "
            "answered by the workers from the state they hold",
            {"200": _json(ref("Preview"), "The count and up to 20 emails"),
             "404": _error("Unknown account"),
             "422": _json(ref("ValidationErrors"), "Invalid rule: every problem"),
             "503": _error("A partition is restoring or moving: retry (Retry-After)")},
            [ACCOUNT], requestBody=rule_body)},
        "/accounts/{account_id}/segments/{segment_id}/members/{email}": {"get": _op(
            "Why a contact is (or is not) a member: its facts, the conditions each fails, "
            "and when time alone changes the answer",
            {"200": _json(ref("Explanation"), "The explanation"),
             "404": _error("Unknown segment or account"),
             "503": _error("The contact's partition is restoring or moving: retry")},
            [ACCOUNT, SEGMENT, _param("email", "path", {"type": "string"}, "The contact")])},
        "/accounts/{account_id}/contacts/{email}": {"delete": _op(
            "Erase one person from the account: contact state, memberships (they leave "
            "with cause erased), the read model; answers once the erasure is on its way "
            "to every worker partition",
            {"202": _json({"type": "object"}, "The erasure was sent"),
             "404": _error("Unknown account")},
            [ACCOUNT, _param("email", "path", {"type": "string"}, "The contact's email")])},
        "/events": {"get": _op(
            "Live feed of membership and rule changes (server-sent events)",
            {"200": {"description": "An event stream",
                     "content": {"text/event-stream": {"schema": {"type": "string"}}}},
             "404": _error("Unknown account")},
            [_param("account_id", "query", ID, "Only this account's", required=False)])},
        "/openapi.json": {"get": _op("This document", {"200": _json(
            {"type": "object", "required": ["openapi", "paths"]}, "OpenAPI 3.1")})},
        "/healthz": {"get": _op("Readiness (no token)", {
            "200": _json(ref("Health"), "Ready"),
            "503": _json(ref("Health"), "Redis unavailable")}, open_=True)},
        "/metrics": {"get": _op("Prometheus metrics (no token)", {"200": {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}}}}, open_=True)},
        "/": {"get": _op("The web page (no token)", {"200": {
            "description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}},
            open_=True)},
        "/static/{name}": {"get": _op(
            "The web page's assets (no token): app.js, builder.js, style.css, and "
            "schema.json, the rule's JSON Schema (read-only; the rule builder's source "
            "of filters, fields, operators and value shapes)",
            {"200": {"description": "The asset",
                     "content": {
                         "text/html": {"schema": {"type": "string"}},
                         "text/javascript": {"schema": {"type": "string"}},
                         "text/css": {"schema": {"type": "string"}},
                         "application/json": {"schema": {
                             "type": "object", "required": ["$schema", "properties"],
                             "description": "schema.json: a JSON Schema (draft 2020-12) "
                                            "of a rule"}}}},
             "404": _error("No such asset")},
            [_param("name", "path", {"type": "string"}, "File name")], open_=True)},
    }


@cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "stripe-segments query API", "version": "1",
                 "description": "Segments of contacts by their Stripe activity: rules, "
                                "members, status. Every route but /healthz, /metrics and "
                                "the page's assets needs a bearer JWT (claims: exp, and "
                                "accounts or scope segments:admin)."},
        "servers": [{"url": "http://localhost:8081", "description": "query API (API_PORT)"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
            "schemas": _schemas(),
        },
    }


async def serve(request: web.Request) -> web.Response:
    return json_response(document())
