"""Where a local run keeps its files, and whether this is production.

Both decide how secrets are found: outside production a missing key is generated once
and kept under the stack directory; in production a missing key stops the process. The
Fernet key of connectors and the token secret of the APIs follow the same rule, so the
rule has one owner.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)


def stack_dir() -> Path:
    """Where jars, data and logs live: SEGMENTS_STACK_DIR, else ./.stack (git-ignored)."""
    return Path(os.environ.get("SEGMENTS_STACK_DIR") or Path.cwd() / ".stack").resolve()


def is_production(env: Mapping[str, str] | None = None) -> bool:
    """SEGMENTS_ENV=production: no generated keys, no development defaults."""
    env = os.environ if env is None else env
    return env.get("SEGMENTS_ENV", "").strip().lower() == "production"


def dev_secret(filename: str, generate: Callable[[], bytes], variable: str,
               stack: Path | None = None) -> str:
    """A development secret kept in the stack directory (mode 0600), made once.

    Two processes starting together agree on whichever file won (O_EXCL). Callers check
    `is_production()` first: production never reaches this.
    """
    path = (stack_dir() if stack is None else stack) / filename
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = generate()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "wb") as out:
        out.write(secret)
    log.warning(
        "%s is not set: generated a development key in %s; set %s (and "
        "SEGMENTS_ENV=production) for any real deployment", variable, path, variable
    )
    return secret.decode()
