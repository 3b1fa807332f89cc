"""The page's static files: the rule builder's script and the rule schema it reads."""

from __future__ import annotations

import re

import orjson

from rules.schema import SCHEMA_PATH, build_schema
from serving.web import _STATIC, _load_static


def test_the_rule_schema_is_served_as_the_parser_builds_it() -> None:
    files = _load_static()
    assert set(files) == set(_STATIC)
    assert orjson.loads(files["schema.json"]) == build_schema()
    assert orjson.loads(files["schema.json"]) == orjson.loads(SCHEMA_PATH.read_bytes())
    assert _STATIC["schema.json"] == "application/json"


def test_the_page_loads_its_scripts_from_files_only() -> None:
    """CSP `default-src 'self'`: no inline script or style anywhere in the page."""
    html = _load_static()["index.html"].decode()
    assert '<script src="/static/builder.js" defer></script>' in html
    assert html.index("builder.js") < html.index("app.js")  # app.js starts the builder
    assert html.count("<script") == html.count("<script src=")
    assert "style=" not in html
    assert "<style" not in html
    assert re.search(r"\son[a-z]+=", html) is None  # no inline event handlers
