"""localstripe (the Stripe emulator) as a real server on loopback, for tests.

Its own CLI binds every interface and pickles its state to /tmp on every write; this
wrapper serves the same app on 127.0.0.1 only with an in-memory store, so parallel
test runs neither expose it nor share state. Run as `python -m tests.localstripe_server
--port N`, or use `running_localstripe()`.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    from aiohttp import web
    from localstripe import resources, server

    # In memory only: no /tmp/localstripe.pickle shared between runs.
    resources.Store.dump_to_disk = lambda self: None
    web.run_app(server.app, host="127.0.0.1", port=args.port, access_log=None, print=None)


def _answers(base: str) -> bool:
    req = urllib.request.Request(f"{base}/v1/balance",
                                 headers={"Authorization": "Bearer sk_test_probe"})
    try:
        with urllib.request.urlopen(req, timeout=1) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_localstripe(timeout: float = 30.0) -> Iterator[str]:
    """Start a fresh localstripe; yields its base URL (for STRIPE_API_BASE)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.localstripe_server", "--port", str(port)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )

        def up() -> bool:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"localstripe exited: {log.read().decode()[-2000:]}")
            return _answers(base)

        try:
            wait_for(up, timeout, what="localstripe to answer")
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
