"""One account-id syntax (issue 14): every place an id enters agrees with `common.ids`."""

from __future__ import annotations

import orjson
import pytest

from common.ids import valid_id
from common.keys import KEY_SEPARATOR
from connectors.connections import ConnectRequestError, parse_connect_request
from rules import RuleError, parse_rule
from serving.api import ApiError, id_param
from serving.read_model import RecordError, write_from_rule_record
from stream.changes import rule_key

pytestmark = pytest.mark.unit
KEY = "sk_test_" + "a" * 24
GOOD = ["acme", "a", "Acme-EU_2.prod", "a" * 128, "0"]
BAD = ["", "acme:eu", "ann@acme", "a b", "a/b", f"a{KEY_SEPARATOR}b", "a" * 129, "zoë",
       "acme\n", "-" * 129]


def _connect(account_id: str) -> bool:
    try:
        parse_connect_request(orjson.dumps({"account_id": account_id, "api_key": KEY}))
    except ConnectRequestError as exc:
        return exc.field != "account_id"  # refused, for this field only
    return True


def _rule(account_id: str) -> bool:
    try:
        parse_rule({"id": "vip", "account_id": account_id, "name": "n",
                    "filter": "charge_failed", "conditions": []})
    except RuleError as exc:
        return [e.path for e in exc.errors] != ["/account_id"]  # JSON Pointer paths
    return True


def _api(account_id: str) -> bool:
    try:
        id_param(account_id, "account_id")
    except ApiError as exc:
        return exc.status != 400
    return True


def _read_model(account_id: str) -> bool:
    try:
        write_from_rule_record(rule_key(account_id, "vip"), None)
    except RecordError:
        return False
    return True


@pytest.mark.parametrize("account_id", GOOD + BAD)
def test_connections_rules_read_model_and_api_agree(account_id: str) -> None:
    expected = account_id in GOOD
    assert valid_id(account_id) is expected
    assert _connect(account_id) is expected
    assert _rule(account_id) is expected
    assert _api(account_id) is expected
    assert _read_model(account_id) is expected


def test_not_a_string_is_not_an_id() -> None:
    assert not valid_id(None)
    assert not valid_id(7)
