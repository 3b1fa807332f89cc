"""Validate real answers of the query API against its OpenAPI document (plain jsonschema).

`check(method, route, status, content_type, body)` finds the documented response of the
route template for that status and validates the JSON body against its schema (refs
resolved inside the document); an undocumented route, method or status is a problem.
"""

from __future__ import annotations

from typing import Any

import orjson
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from serving.openapi import document

BASE = "urn:stripe-segments:openapi"


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class OpenApi:
    def __init__(self, doc: dict[str, Any] | None = None) -> None:
        self.doc = document() if doc is None else doc
        resource = Resource.from_contents(self.doc, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(BASE, resource)
        self.checked: set[tuple[str, str, int]] = set()

    def check(self, method: str, route: str, status: int, content_type: str,
              body: bytes) -> list[str]:
        where = f"{method} {route} {status}"
        operation = self.doc["paths"].get(route, {}).get(method.lower())
        if operation is None:
            return [f"{where}: route not documented"]
        response = operation["responses"].get(str(status))
        if response is None:
            return [f"{where}: status not documented"]
        self.checked.add((method.upper(), route, status))
        content = response.get("content")
        if not content:
            return [] if not body else [f"{where}: a body where none is documented"]
        if content_type not in content and "*/*" not in content:
            return [f"{where}: {content_type} not documented ({sorted(content)})"]
        if content_type != "application/json":
            return []
        pointer = "/".join(_escape(t) for t in (
            "paths", route, method.lower(), "responses", str(status), "content",
            "application/json", "schema"))
        validator = Draft202012Validator({"$ref": f"{BASE}#/{pointer}"},
                                         registry=self.registry)
        return [f"{where}: {e.json_path}: {e.message}"
                for e in validator.iter_errors(orjson.loads(body))]
