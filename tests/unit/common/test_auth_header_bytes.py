"""A bearer token that is not ASCII is refused as malformed (401), never a 500.

Found by tests/reliability/test_fuzz_headers.py: aiohttp hands a header's non-UTF-8
bytes over as surrogates, and PyJWT's `encode("utf-8")` of them raised
UnicodeEncodeError out of the auth middleware.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from common.auth import TokenVerifier, Unauthorized, bearer_token
from tests.tokens import TEST_AUTH_SECRET

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("value", ["Bearer \udc80", "bearer a\udcff.b.c", "Bearer é.x.y",
                                   "Bearer \x00abc"])
def test_a_token_that_is_not_ascii_is_malformed(value: str) -> None:
    # Only the headers are read; aiohttp's mocked request cannot carry surrogates.
    request = SimpleNamespace(headers={"Authorization": value})
    verifier = TokenVerifier(secret=TEST_AUTH_SECRET)
    with pytest.raises(Unauthorized):
        verifier.verify(bearer_token(request))  # type: ignore[arg-type]
