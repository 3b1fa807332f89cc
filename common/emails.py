"""The one email normaliser: connectors, stream and serving all call it, so one
address can never become two contacts (or a key that splits wrong).

SPEC, "Contacts": emails are trimmed and lower-cased. Beyond that an address is refused
(None) when it is not a string, is empty, has no `@`, is longer than 254 characters
(RFC 5321's limit on a forward path), or holds a control or format character: C0/C1
controls (among them the key separator `\\x1f` of `common.keys`, which would make a record
key split into the wrong parts), DEL, and invisible format characters (zero-width
joiners, bidi overrides) that would make two different contacts look the same.
"""

from __future__ import annotations

import hashlib
import unicodedata

from common.keys import KEY_SEPARATOR

#: RFC 5321: at most 256 octets in a path, 254 of them the address itself.
MAX_EMAIL_LENGTH = 254
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})
_ASCII_CONTROLS = frozenset(chr(c) for c in (*range(0x20), 0x7F))


def normalize_email(raw: object) -> str | None:
    """Trimmed and lower-cased; None for anything that is not a plausible address."""
    if not isinstance(raw, str):
        return None
    email = raw.strip().lower()
    if not email or "@" not in email or len(email) > MAX_EMAIL_LENGTH:
        return None
    if KEY_SEPARATOR in email:
        return None
    if email.isascii():  # the common case: one pass over a small set
        return None if any(ch in _ASCII_CONTROLS for ch in email) else email
    if any(unicodedata.category(ch) in _REFUSED_CATEGORIES for ch in email):
        return None
    return email


def email_digest(email: str) -> str:
    """A short stable name for an email in logs (never the address itself)."""
    return hashlib.sha256(email.encode()).hexdigest()[:12]
