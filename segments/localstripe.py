"""localstripe (the Stripe emulator) on loopback, in memory: for the demo and the tests.

Its own CLI binds every interface and pickles its state to the temp directory on every
write; `python -m segments.localstripe --port N` serves the same app on 127.0.0.1
only, with an in-memory store, so runs neither expose it nor share state.
`LocalStripe` runs that as a child process and stops it; on Linux the child also
asks the kernel to end it when the thread that started it ends, so a killed parent
leaves no emulator behind (start it from the main thread).

localstripe is a development dependency (`pip install -e '.[dev]'`, which `make demo`
does); `available()` says whether it is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from segments.errors import ShellError

__all__ = ["LocalStripe", "LocalStripeError", "available", "free_port", "running_localstripe"]

REPO = Path(__file__).resolve().parents[1]


class LocalStripeError(ShellError, RuntimeError):
    """localstripe did not start (or is not installed); the message says why."""


def available() -> bool:
    return importlib.util.find_spec("localstripe") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def answers(base: str) -> bool:
    req = urllib.request.Request(f"{base}/v1/balance",
                                 headers={"Authorization": "Bearer sk_test_probe"})
    try:
        with urllib.request.urlopen(req, timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class LocalStripe:
    """One emulator process on 127.0.0.1; `start()` returns its base URL."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 30.0) -> str:
        if not available():
            raise LocalStripeError(
                "localstripe is not installed: pip install -e '.[dev]' (or pip install "
                "localstripe)")
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  # closed by stop()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "segments.localstripe", "--port", str(self.port)],
            cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not answers(self.base):
            if self._proc.poll() is not None:
                output = self.output()
                self.stop()
                raise LocalStripeError(f"localstripe exited: {output[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise LocalStripeError(f"localstripe did not answer within {timeout:.0f}s")
            time.sleep(0.1)
        return self.base

    def output(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalStripe:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_localstripe(timeout: float = 30.0) -> Iterator[str]:
    """Start a fresh localstripe; yields its base URL (for STRIPE_API_BASE)."""
    server = LocalStripe()
    server.start(timeout)
    try:
        yield server.base
    finally:
        server.stop()


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent (thread) goes away."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m segments.localstripe",
                                     description="localstripe on 127.0.0.1, in memory")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent()

    from aiohttp import web
    from localstripe import resources, server

    # In memory only: no /tmp/localstripe.pickle shared between runs.
    def no_dump(self: Any) -> None:
        return None

    resources.Store.dump_to_disk = no_dump
    web.run_app(server.app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
