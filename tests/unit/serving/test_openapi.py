"""The OpenAPI document: well-formed schemas, and a checker that does catch a bad answer."""

from __future__ import annotations

import orjson
import pytest
from jsonschema import Draft202012Validator

from serving.openapi import document
from tests.openapi_check import OpenApi

pytestmark = pytest.mark.unit


def test_every_schema_is_valid_json_schema_2020_12() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0"
    for schema in doc["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)  # raises SchemaError when malformed


def test_the_checker_catches_answers_off_the_document() -> None:
    api = OpenApi()
    route = "/accounts/{account_id}/segments/{segment_id}"
    good = {"account_id": "acme", "segment_id": "s", "rule": None, "member_count": 0,
            "seq": 1, "status": "ready"}
    assert api.check("GET", route, 200, "application/json", orjson.dumps(good)) == []
    bad = {**good, "status": "done", "member_count": -1}
    assert len(api.check("GET", route, 200, "application/json", orjson.dumps(bad))) == 2
    rule = {"id": "s", "account_id": "acme", "name": "n", "filter": "refunded",
            "conditions": [{"field": "amount", "op": "gt", "value": "5"}],
            "timezone": "UTC", "version": 1}
    assert api.check("GET", route, 200, "application/json",
                     orjson.dumps({**good, "rule": rule})) == []
    broken = {**rule, "conditions": [{"field": "colour"}]}
    assert api.check("GET", route, 200, "application/json",
                     orjson.dumps({**good, "rule": broken})) != []
    assert api.check("GET", route, 418, "application/json", b"{}") == [
        f"GET {route} 418: status not documented"]
    assert api.check("PATCH", route, 200, "application/json", b"{}") == [
        f"PATCH {route} 200: route not documented"]
