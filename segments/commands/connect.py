"""`segments connect`: connect a Stripe account through the running connector.

The API key is read from a file or from standard input (a hidden prompt on a
terminal), never from the command line, where it would land in shell history and in
every process listing. The webhook secret, when given, follows the same rule.

The connection API needs a bearer token: `SEGMENTS_TOKEN` when set (a token from your
identity provider), else one for `--account` signed here with the local secret
(`SEGMENTS_AUTH_SECRET`, or the development secret of `segments token`), valid 5 minutes.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import urllib.error
import urllib.request
from typing import Any

import orjson

from common.auth import AuthConfigError, mint_token, resolve_signing_secret
from common.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "connect",
        help="connect a Stripe account (the API key is read from stdin or a file)",
        description=(
            "Checks a Stripe secret (sk_) or restricted (rk_) key, registers a webhook "
            "endpoint for the event types the engine uses at SEGMENTS_PUBLIC_URL, stores "
            "the key and the signing secret encrypted and starts the 30-day backfill. "
            "Prints the new connection id. The key is never accepted on the command line: "
            "pipe it in (`segments connect --account acme < key.txt`), pass --key-file, "
            "or type it at the hidden prompt."
        ),
    )
    parser.add_argument("--account", required=True, help="the Center account id, e.g. acme")
    parser.add_argument("--key-file", metavar="FILE",
                        help="file holding the Stripe API key ('-' or absent: stdin)")
    parser.add_argument(
        "--webhook-secret-file", metavar="FILE",
        help="you registered the endpoint yourself: file holding its whsec_ signing secret "
             "(then no endpoint is created)",
    )
    parser.add_argument(
        "--connector-url", default=None,
        help="the connector's internal port (default http://127.0.0.1:$CONNECTOR_ADMIN_PORT)")
    parser.set_defaults(func=run)


def _read_secret(path: str | None, prompt: str) -> str:
    if path and path != "-":
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    if sys.stdin.isatty():
        return getpass.getpass(prompt).strip()
    return sys.stdin.read().strip()


def run(args: argparse.Namespace) -> int:
    try:
        api_key = _read_secret(args.key_file, "Stripe API key (input hidden): ")
        secret = None
        if args.webhook_secret_file:
            secret = _read_secret(args.webhook_secret_file, "Webhook signing secret: ")
    except OSError as exc:
        print(f"segments connect: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    if not api_key:
        print("segments connect: no API key given (stdin or --key-file)", file=sys.stderr)
        return 2
    doc: dict[str, str] = {"account_id": args.account, "api_key": api_key}
    if secret:
        doc["webhook_secret"] = secret
    settings = Settings.from_env()
    try:
        token = _token(settings, args.account)
    except AuthConfigError as exc:
        print(f"segments connect: {exc}", file=sys.stderr)
        return 2
    base = args.connector_url or f"http://127.0.0.1:{settings.connector_admin_port}"
    url = f"{base.rstrip('/')}/connections"
    request = urllib.request.Request(
        url, data=orjson.dumps(doc), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            answer = orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        print(f"segments connect: {_describe(exc.code, exc.read())}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"segments connect: the connector does not answer at {base} "
              f"({exc.reason}); start it with `segments connector`", file=sys.stderr)
        return 1
    print(answer["id"])
    endpoint = answer.get("webhook_endpoint_id")
    print(f"connected {answer['account_id']}: status {answer.get('status')}, backfill "
          f"{answer.get('backfill')}" + (f", webhook endpoint {endpoint}" if endpoint else ""),
          file=sys.stderr)
    return 0


def _token(settings: Settings, account: str) -> str:
    given = os.environ.get("SEGMENTS_TOKEN", "").strip()
    if given:
        return given
    secret = resolve_signing_secret(settings)
    if secret is None:
        raise AuthConfigError("only SEGMENTS_AUTH_JWKS is configured: set SEGMENTS_TOKEN to a "
                              "token from your identity provider")
    return mint_token(secret, accounts=[account], ttl_s=300, audience=settings.auth_audience)


def _describe(status: int, body: bytes) -> str:
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        error = None
    if isinstance(error, dict):
        field = f"{error.get('field')}: " if error.get("field") else ""
        return f"refused (HTTP {status}): {field}{error.get('reason')}"
    return f"refused (HTTP {status})"
