"""Where a local run keeps its files, and whether this is production.

Both decide how secrets are found: outside production a missing key is generated once
and kept under the stack directory; in production a missing key stops the process. The
Fernet key of connectors and the token secret of the APIs follow the same rule, so the
rule has one owner.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path


def stack_dir() -> Path:
    """Where jars, data and logs live: SEGMENTS_STACK_DIR, else ./.stack (git-ignored)."""
    return Path(os.environ.get("SEGMENTS_STACK_DIR") or Path.cwd() / ".stack").resolve()


def is_production(env: Mapping[str, str] | None = None) -> bool:
    """SEGMENTS_ENV=production: no generated keys, no development defaults."""
    env = os.environ if env is None else env
    return env.get("SEGMENTS_ENV", "").strip().lower() == "production"
