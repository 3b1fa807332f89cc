"""The one email normaliser (`common.emails`), and that every layer uses it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import connectors.emails
import serving.api
import stream.facts
from common.emails import MAX_EMAIL_LENGTH, email_digest, normalize_email
from common.keys import KEY_SEPARATOR, pack, split

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ann@Example.com", "ann@example.com"),
        ("  ann@example.com\n", "ann@example.com"),
        ("josé@exämple.com", "josé@exämple.com"),
        ("a@" + "b" * (MAX_EMAIL_LENGTH - 2), "a@" + "b" * (MAX_EMAIL_LENGTH - 2)),
        ("a@" + "b" * (MAX_EMAIL_LENGTH - 1), None),  # 255 characters
        ("", None),
        ("   ", None),
        ("no-at-sign", None),
        (None, None),
        (42, None),
        (b"ann@example.com", None),
        ("ann\x1f@example.com", None),  # the key separator
        ("ann@exa\x1fmple.com", None),
        ("ann@example.com\x00", None),
        ("ann\r\n@example.com", None),
        ("ann\x7f@example.com", None),
        ("ann\x85@example.com", None),  # C1 control
        ("ann\u200d@example.com", None),  # zero-width joiner: looks like ann@
        ("ann\u202e@example.com", None),  # bidi override
        ("ann\u2028@example.com", None),  # line separator
    ],
)
def test_normalize_email(raw: object, expected: str | None) -> None:
    assert normalize_email(raw) == expected


@given(st.text(max_size=300))
def test_a_normalised_email_is_a_safe_key_part(raw: str) -> None:
    email = normalize_email(raw)
    if email is None:
        return
    assert KEY_SEPARATOR not in email
    assert len(email) <= MAX_EMAIL_LENGTH
    assert "@" in email
    assert email == email.strip().lower()
    assert normalize_email(email) == email  # idempotent
    assert split(pack("acme", email), 2) == ("acme", email)


def test_every_layer_uses_the_one_normaliser() -> None:
    assert stream.facts.normalize_email is normalize_email
    assert connectors.emails.normalize_email is normalize_email
    assert serving.api.normalize_email is normalize_email


def test_digest_names_an_email_without_showing_it() -> None:
    digest = email_digest("ann@example.com")
    assert digest == email_digest("ann@example.com")
    assert digest != email_digest("bob@example.com")
    assert "ann" not in digest
    assert len(digest) == 12
