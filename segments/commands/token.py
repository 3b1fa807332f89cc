"""`segments token`: a bearer token for the connection API and the query API.

Signed (HS256) with `SEGMENTS_AUTH_SECRET`, or outside production with the development
secret the local servers generate and verify with; with only `SEGMENTS_AUTH_JWKS`
configured, tokens come from the identity provider that holds the private keys.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from common.settings import Settings

TTL = re.compile(r"^(\d+)([smhd]?)$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: Longest validity a local token may have: a leaked token is good until it expires.
MAX_TTL_S = 30 * 86400


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "token",
        help="print a bearer token for the connection API and the query API",
        description=(
            "Prints a JWT signed with the local secret (SEGMENTS_AUTH_SECRET, else the "
            "development secret): for the accounts given with --account, or for every "
            "account with --admin (scope segments:admin). Send it as "
            "`Authorization: Bearer <token>`; open the web page as http://HOST:API_PORT/"
            "#token=<token>."
        ),
    )
    parser.add_argument("--account", action="append", default=[], metavar="ACCOUNT",
                        help="an account the token may act for (repeatable)")
    parser.add_argument("--admin", action="store_true",
                        help="every account (scope segments:admin)")
    parser.add_argument("--ttl", default="1h",
                        help="validity: seconds, or N with s, m, h or d (default 1h; max 30d)")
    parser.set_defaults(func=run)


def parse_ttl(raw: str) -> int:
    found = TTL.fullmatch(raw.strip())
    if found is None:
        raise ValueError(f"--ttl must look like 3600, 90s, 15m, 1h or 7d (got {raw!r})")
    seconds = int(found.group(1)) * UNITS[found.group(2)]
    if not 1 <= seconds <= MAX_TTL_S:
        raise ValueError("--ttl must be between 1 second and 30 days")
    return seconds


def run(args: argparse.Namespace) -> int:
    from common.auth import ACCOUNT_ID, AuthConfigError, mint_token, resolve_signing_secret

    if not args.account and not args.admin:
        print("segments token: give --account ACCOUNT (repeatable) or --admin", file=sys.stderr)
        return 2
    bad = [a for a in args.account if not ACCOUNT_ID.fullmatch(a)]
    if bad:
        print(f"segments token: {bad[0]!r} is not an account id", file=sys.stderr)
        return 2
    try:
        ttl = parse_ttl(args.ttl)
    except ValueError as exc:
        print(f"segments token: {exc}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    try:
        secret = resolve_signing_secret(settings)
    except AuthConfigError as exc:
        print(f"segments token: {exc}", file=sys.stderr)
        return 2
    if secret is None:
        print("segments token: only SEGMENTS_AUTH_JWKS is configured; tokens come from the "
              "identity provider that holds its private keys", file=sys.stderr)
        return 2
    print(mint_token(secret, accounts=args.account, admin=args.admin, ttl_s=ttl,
                     audience=settings.auth_audience))
    return 0
