"""What the demo needs of the terminal and the process: credentials, width, Ctrl-C."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
from pathlib import Path


def new_credentials() -> tuple[str, str]:
    """A test-mode API key for localstripe and the webhook signing secret of the demo."""
    return f"sk_test_demo{secrets.token_hex(12)}", f"whsec_{secrets.token_urlsafe(24)}"


def terminal_width() -> int:
    return max(80, min(140, shutil.get_terminal_size((100, 40)).columns))


def install_interrupt(stop: asyncio.Event) -> None:
    """First Ctrl-C (or SIGTERM): a clean stop. A second Ctrl-C interrupts the cleanup."""
    loop = asyncio.get_running_loop()

    def first(sig: signal.Signals) -> None:
        stop.set()
        loop.remove_signal_handler(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, first, sig)


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
