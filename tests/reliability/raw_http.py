"""A deliberately naive HTTP/1.1 client on a raw socket, for abuse tests.

Real clients refuse to send what these tests need to send (CR/LF inside a header value,
NUL bytes, conflicting framing headers, invalid UTF-8 in a header). `exchange` sends the
bytes as given and parses whatever comes back, so a test can assert on every response
the server gave, including a second one it should never have given.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


def request_bytes(method: str, target: str, headers: list[tuple[bytes, bytes]],
                  body: bytes, *, content_length: bool = True) -> bytes:
    lines = [f"{method} {target} HTTP/1.1".encode("utf-8", "surrogateescape"),
             b"Host: 127.0.0.1", b"Connection: close"]
    if content_length:
        lines.append(b"Content-Length: %d" % len(body))
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _parse(buffer: bytes) -> tuple[Response, bytes] | None:
    """One complete response off the front of `buffer`, and the rest; None if incomplete."""
    head, sep, rest = buffer.partition(b"\r\n\r\n")
    if not sep:
        return None
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if len(rest) < length:
        return None
    return Response(status, rest[:length]), rest[length:]


def exchange(port: int, raw: bytes, *, timeout: float = 10.0,
             linger: float = 0.2) -> list[Response]:
    """Send `raw`, return every response until the server closes or goes quiet.

    Raises TimeoutError if no complete response arrives within `timeout`.
    """
    responses: list[Response] = []
    buffer = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # The server may answer and close before reading it all.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(raw)
        while True:
            now = time.monotonic()
            if now > deadline:
                break
            sock.settimeout(linger if responses else max(0.01, deadline - now))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if responses:
                    break
                continue
            except ConnectionResetError:
                chunk = b""
            if chunk:
                buffer += chunk
            while (parsed := _parse(buffer)) is not None:
                response, buffer = parsed
                if response.status >= 200:  # 1xx (100 Continue) is interim
                    responses.append(response)
            if not chunk:
                break
    if not responses:
        raise TimeoutError(f"no response within {timeout}s (got {buffer[:200]!r})")
    return responses
