"""What the reliability suite must never see in clear, and where it looked.

Every API key and webhook secret the suite uses is made here (bearer tokens and the
tokens' signing secret are registered here too) (`LEDGER.api_key()`,
`LEDGER.webhook_secret()`), random for each run, so that finding one in a log line, on a
topic or in Redis can only mean the code under test leaked it. Each secret is checked
by its random part too, so that a secret with its `sk_`/`whsec_` prefix cut off, or
URL-encoded, still counts.

`tests/reliability/conftest.py` feeds every log record, every captured output and every
Redis command of the suite through `check`; `test_zz_secrets.py` then reads every topic
of every prefix the suite used and the Redis keys left under them, and asserts that
`leaks` is empty.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Ledger:
    #: Random parts of every secret handed out (what the scans look for).
    needles: set[str] = field(default_factory=set)
    #: Topic prefixes (and so Redis namespaces) of every test that used the broker.
    prefixes: set[str] = field(default_factory=set)
    #: Where something was found: "<source>: <excerpt with the secret masked>".
    leaks: list[str] = field(default_factory=list)
    #: How many items were scanned, per source (log lines, outputs, Redis commands ...).
    scanned: Counter[str] = field(default_factory=Counter)
    _pattern: re.Pattern[str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _remember(self, secret: str, random_part: str) -> str:
        with self._lock:
            self.needles.add(random_part)
            self._pattern = re.compile("|".join(sorted(map(re.escape, self.needles))))
        return secret

    def api_key(self) -> str:
        part = secrets.token_hex(16)
        return self._remember(f"sk_test_rel{part}", part)

    def webhook_secret(self) -> str:
        part = secrets.token_hex(16)
        return self._remember(f"whsec_rel{part}", part)

    def token(self, token: str) -> str:
        """A bearer token the suite sends: its signature is its random part."""
        return self._remember(token, token.rsplit(".", 1)[-1])

    def auth_secret(self, secret: str) -> str:
        return self._remember(secret, secret)

    def check(self, source: str, text: str) -> None:
        """Record a leak if `text` contains any secret handed out so far."""
        pattern = self._pattern
        with self._lock:
            self.scanned[source] += 1
        if pattern is None or not text:
            return
        found = pattern.search(text)
        if found is not None:
            start = max(0, found.start() - 60)
            excerpt = text[start:found.end() + 20].replace(found.group(), "<SECRET>")
            with self._lock:
                self.leaks.append(f"{source}: ...{excerpt}...")

    def check_bytes(self, source: str, data: bytes | None) -> None:
        if data:
            self.check(source, data.decode("utf-8", "replace"))


LEDGER = Ledger()
