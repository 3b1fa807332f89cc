"""The one syntax of account ids and segment (rule) ids, everywhere they enter.

Connections (`POST /connections`), rules (`rules.parse`), the read model and the query
API all check ids here, so an id one of them accepts is accepted by all: an account that
connects also gets segments. The alphabet is the read model's: 1-128 characters of
`A-Z a-z 0-9 . _ -`. It excludes the key separator of `common.keys` (and `:`, which the
read model's Redis keys use), so packed keys always split back into the same ids.
"""

from __future__ import annotations

import re
from typing import Final

#: JSON Schema / `re` pattern of an id (the rule schema publishes it as is).
ID_PATTERN: Final[str] = r"^[A-Za-z0-9._-]{1,128}$"
#: What an invalid id is told, in every error message that names the rule.
ID_RULE: Final[str] = "1-128 characters of A-Z a-z 0-9 . _ -"
MAX_ID_LENGTH: Final[int] = 128
_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")


def valid_id(value: object) -> bool:
    """Whether `value` is an account id or segment id (a str of the alphabet above)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None
