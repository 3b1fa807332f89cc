"""A real Apache Kafka (KRaft) cluster from the Maven Central jars, without Docker.

Jars are resolved once by Maven into the stack directory; each node's storage is
formatted on first start; a node is only reported up once a client can fetch metadata
through it, so callers never race a half-started broker.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from common import kafka
from common.settings import Settings
from segments.stack.processes import (
    StackError,
    is_alive,
    read_pid,
    require_tool,
    spawn,
    stop,
    tail,
)

KAFKA_VERSION = "4.1.1"
JAVA_HINT = "install a Java 17+ runtime (Debian: apt-get install -y openjdk-17-jre-headless)"
MAVEN_HINT = "install Maven (Debian: apt-get install -y maven); it fetches the Kafka jars"


@dataclass(frozen=True)
class Node:
    node_id: int
    port: int
    controller_port: int
    home: Path

    @property
    def pidfile(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def logfile(self) -> Path:
        return self.home / "kafka.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


class LocalKafka:
    """One KRaft cluster of `nodes` combined broker+controller nodes on loopback."""

    def __init__(self, stack_dir: Path, nodes: int = 1, base_port: int | None = None,
                 home: str | None = None) -> None:
        if nodes < 1:
            raise StackError("a cluster needs at least one node")
        self.stack_dir = stack_dir
        self.jar_dir = stack_dir / "jars" / f"kafka-{KAFKA_VERSION}"
        # One node: the usual 9092. Several: other ports, so both can run side by side.
        base = base_port if base_port is not None else (9092 if nodes == 1 else 19092)
        self.home = stack_dir / (home or ("kafka" if nodes == 1 else f"kafka-{nodes}"))
        self.nodes = [
            Node(i + 1, base + i, base + 100 + i, self.home / f"node-{i + 1}")
            for i in range(nodes)
        ]

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    def ensure_jars(self) -> Path:
        """Resolve the broker's jars with Maven into the cache, once."""
        marker = self.jar_dir / ".complete"
        if marker.exists():
            return self.jar_dir
        require_tool("java", JAVA_HINT)
        mvn = require_tool("mvn", MAVEN_HINT)
        self.jar_dir.mkdir(parents=True, exist_ok=True)
        pom = resources.files("segments.stack") / "kafka-pom.xml"
        with resources.as_file(pom) as pom_path:
            result = subprocess.run(
                [mvn, "-q", "-B", "-f", str(pom_path), "dependency:copy-dependencies",
                 f"-DoutputDirectory={self.jar_dir}", "-DincludeScope=runtime",
                 f"-Dkafka.version={KAFKA_VERSION}"],
                capture_output=True,
                text=True,
                check=False,
            )
        if result.returncode != 0:
            raise StackError(
                "Maven could not fetch the Kafka jars:\n" + (result.stdout + result.stderr)[-2000:]
            )
        marker.write_text(KAFKA_VERSION)
        return self.jar_dir

    def _listener_properties(self, node: Node) -> list[str]:
        """Listeners and their security (a secured cluster overrides this)."""
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        ]

    def _properties(self, node: Node) -> str:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        replication = min(3, len(self.nodes))
        min_isr = 1 if len(self.nodes) == 1 else 2
        return "\n".join([
            "process.roles=broker,controller",
            f"node.id={node.node_id}",
            f"controller.quorum.voters={voters}",
            *self._listener_properties(node),
            f"log.dirs={node.home / 'data'}",
            "num.partitions=1",
            f"default.replication.factor={replication}",
            f"min.insync.replicas={min_isr}",
            f"offsets.topic.replication.factor={replication}",
            f"transaction.state.log.replication.factor={replication}",
            f"transaction.state.log.min.isr={min_isr}",
            "offsets.topic.num.partitions=10",
            "transaction.state.log.num.partitions=10",
            "group.initial.rebalance.delay.ms=0",
            # Topics are declared by the project with the right partitions and policies;
            # a typo must fail rather than create a stray one-partition topic.
            "auto.create.topics.enable=false",
            "log.retention.hours=168",
            "",
        ])

    def probe_settings(self, node: Node) -> Settings:
        """How a client reaches `node` (readiness and status probes)."""
        return Settings(kafka_bootstrap_servers=node.bootstrap)

    def _format_args(self) -> list[str]:
        """Extra arguments of `StorageTool format` (SCRAM users of a secured cluster)."""
        return []

    def _format(self, node: Node, jars: Path) -> None:
        if (node.home / "data" / "meta.properties").exists():
            return
        node.home.mkdir(parents=True, exist_ok=True)
        cluster_file = self.home / "cluster.id"
        if not cluster_file.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            # Kafka wants a base64 UUID; StorageTool's random-uuid makes the same shape.
            import base64

            raw = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            cluster_file.write_text(raw)
        props = node.home / "server.properties"
        self._write_properties(node)
        result = subprocess.run(
            ["java", "-cp", f"{jars}/*", "kafka.tools.StorageTool", "format",
             "-t", cluster_file.read_text().strip(), "-c", str(props), *self._format_args()],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")

    def _write_properties(self, node: Node) -> None:
        path = node.home / "server.properties"
        path.touch(mode=0o600)  # a secured node's file holds its inter-broker password
        path.write_text(self._properties(node))

    def _java_argv(self, node: Node, jars: Path) -> list[str]:
        heap = "768m" if len(self.nodes) == 1 else "512m"
        log4j = resources.files("segments.stack") / "log4j2.properties"
        return [
            "java", f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp", f"{jars}/*", "kafka.Kafka", str(node.home / "server.properties"),
        ]

    def start_node(self, node: Node) -> None:
        """Start one node if it is not running (used by fault tests to revive a broker)."""
        if read_pid(node.pidfile) is not None:
            return
        jars = self.ensure_jars()
        self._format(node, jars)
        self._write_properties(node)
        spawn(self._java_argv(node, jars), node.logfile, node.pidfile)

    def stop_node(self, node: Node, kill: bool = False) -> None:
        if kill:
            import os
            import signal

            pid = read_pid(node.pidfile)
            if pid is not None:
                os.killpg(pid, signal.SIGKILL)
        stop(node.pidfile)

    def up(self, timeout: float = 120.0) -> str:
        require_tool("java", JAVA_HINT)
        for node in self.nodes:
            self.start_node(node)
        self.wait_ready(timeout)
        return self.bootstrap_servers

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            while not metadata_ok(self.probe_settings(node), expect_brokers=len(self.nodes)):
                pid = read_pid(node.pidfile)
                if pid is None or not is_alive(pid):
                    raise StackError(
                        f"Kafka node {node.node_id} exited; last log lines:\n{tail(node.logfile)}"
                    )
                if time.monotonic() > deadline:
                    raise StackError(
                        f"Kafka node {node.node_id} not ready after {timeout:.0f}s:\n"
                        f"{tail(node.logfile)}"
                    )
                time.sleep(0.5)

    def down(self) -> int:
        return sum(stop(node.pidfile) for node in self.nodes)

    def status(self) -> dict[int, str]:
        out = {}
        for node in self.nodes:
            pid = read_pid(node.pidfile)
            if pid is None:
                out[node.node_id] = "stopped"
            elif metadata_ok(self.probe_settings(node), expect_brokers=1):
                out[node.node_id] = f"up (pid {pid}, {node.bootstrap})"
            else:
                out[node.node_id] = f"starting or unhealthy (pid {pid})"
        return out


def metadata_ok(settings: Settings, expect_brokers: int = 1, timeout: float = 5.0) -> bool:
    """True once a client can fetch cluster metadata listing `expect_brokers` brokers."""

    async def probe() -> bool:
        # Refused connections are the expected answer while a node boots.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

        client = kafka.client(settings, request_timeout_ms=int(timeout * 1000))
        try:
            await asyncio.wait_for(client.bootstrap(), timeout)
            await asyncio.wait_for(client.force_metadata_update(), timeout)
            return len(client.cluster.brokers()) >= expect_brokers
        except Exception:
            return False
        finally:
            await client.close()

    return asyncio.run(probe())
