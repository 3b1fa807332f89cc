"""Redis for local runs: the one at REDIS_URL if it answers, else Debian's redis-server.

Persistence is off: the read model is rebuilt from Kafka's compacted topic, and
connection secrets in a local stack are development data.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from common.redis_client import sync_redis_client
from segments.stack.processes import (
    StackError,
    read_pid,
    require_tool,
    spawn,
    stop,
    tail,
    wait_until,
)

REDIS_HINT = "install Redis (Debian: apt-get install -y redis-server)"


def ping(url: str) -> bool:
    import redis

    try:
        client = sync_redis_client(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


class LocalRedis:
    def __init__(self, stack_dir: Path, url: str, home: str = "redis") -> None:
        self.url = url
        self.home = stack_dir / home
        self.pidfile = self.home / "redis.pid"
        self.logfile = self.home / "redis.log"

    @property
    def port(self) -> int:
        return urlparse(self.url).port or 6379

    def up(self, timeout: float = 20.0) -> str:
        if ping(self.url):
            return "up" if read_pid(self.pidfile) else "up (not started by us)"
        host = urlparse(self.url).hostname or "localhost"
        if host not in ("localhost", "127.0.0.1", "::1"):
            raise StackError(f"Redis at {host} does not answer, and is not ours to start")
        server = require_tool("redis-server", REDIS_HINT)
        self.home.mkdir(parents=True, exist_ok=True)
        spawn(self._argv(server), self.logfile, self.pidfile)
        if not wait_until(lambda: ping(self.url), timeout):
            raise StackError(
                f"redis-server did not answer on port {self.port}:\n{tail(self.logfile)}"
            )
        return "up"

    def _argv(self, server: str) -> list[str]:
        return [server, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", str(self.home), "--daemonize", "no"]

    def down(self) -> bool:
        return stop(self.pidfile)

    def status(self) -> str:
        if not ping(self.url):
            return "down"
        return "up" if read_pid(self.pidfile) else "up (not started by us)"
