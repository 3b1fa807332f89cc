"""The ACLs each service needs on a secured cluster, and provisioning them.

Derived from the topic catalogue (`common.topics`: which process reads and writes which
topic) and the services' group and transactional ids, for one deployment (one topic
prefix). README, "Deploying on a secured cluster", lists the same grants for a platform
team to apply with its own tools; `provision` applies them (and creates the topics) as
the admin principal, which `segments stack up --secure` and the secure-stack test do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from aiokafka.protocol.admin import CreateAclsRequest

from common import kafka
from common.settings import Settings
from common.topics import (
    API_READS,
    API_WRITES,
    CONNECTIONS_TOPIC,
    CONNECTOR_WRITES,
    TOPICS,
    WORKER_READS,
    WORKER_WRITES,
    KafkaTopicError,
    ensure_topics,
)
from segments.stack.secure import API, CONNECTOR, WORKER
from serving.read_model_agent import group_id as read_model_group
from stream.app import group_id as worker_group

#: Kafka's enums (org.apache.kafka.common.resource / acl).
RESOURCE_TYPES = {"topic": 2, "group": 3, "cluster": 4, "transactional-id": 5}
PATTERN_TYPES = {"literal": 3, "prefixed": 4}
OPERATIONS = {"read": 3, "write": 4, "create": 5, "describe": 8}
ALLOW = 3



class AclError(KafkaTopicError):
    """The broker refused to create an ACL."""


@dataclass(frozen=True, slots=True)
class Acl:
    principal: str
    resource: str
    name: str
    operation: str
    pattern: str = "literal"

    def describe(self) -> str:
        return (f"{self.principal}: {self.operation.upper()} on {self.resource} "
                f"{self.name}{'*' if self.pattern == 'prefixed' else ''}")


def _topics(principal: str, settings: Settings, names: Iterable[str],
            operation: str) -> list[Acl]:
    return [Acl(principal, "topic", settings.topic(name), operation) for name in names]


def service_acls(settings: Settings, users: Mapping[str, str] | None = None) -> list[Acl]:
    """Every grant of the three services, for the deployment of `settings`.

    `users` maps "connector", "worker", "api" to their principals' user names.
    """
    names = {"connector": CONNECTOR, "worker": WORKER, "api": API, **(users or {})}
    connector, worker, api = (f"User:{names[s]}" for s in ("connector", "worker", "api"))
    group = worker_group(settings)
    return [
        # The connector: publishes raw events (idempotent producer: WRITE suffices).
        *_topics(connector, settings, CONNECTOR_WRITES, "write"),
        *_topics(connector, settings, (CONNECTIONS_TOPIC,), "read"),
        *_topics(connector, settings, (CONNECTIONS_TOPIC,), "write"),
        # The worker: its inputs and changelogs, its outputs, its consumer group, and the
        # transactional ids of its tasks ({group}-{partition}).
        *_topics(worker, settings, WORKER_READS, "read"),
        *_topics(worker, settings, WORKER_WRITES, "write"),
        Acl(worker, "group", group, "read"),
        Acl(worker, "transactional-id", f"{group}-", "write", "prefixed"),
        Acl(worker, "transactional-id", f"{group}-", "describe", "prefixed"),
        # The query API: the change feed, current members (rebuilds) and rules.
        *_topics(api, settings, API_READS, "read"),
        Acl(api, "group", read_model_group(settings), "read"),
        # Rules over HTTP write transactionally (one transactional id per segment,
        # serving.rules_store), and erasure records go to segments.control.
        *_topics(api, settings, API_WRITES, "write"),
        Acl(api, "transactional-id", f"{settings.topic_prefix}segments-rules:", "write",
            "prefixed"),
        Acl(api, "transactional-id", f"{settings.topic_prefix}segments-rules:", "describe",
            "prefixed"),
    ]


async def create_acls(admin_settings: Settings, acls: Iterable[Acl]) -> None:
    """Create `acls` (existing ones are left as they are) as a super user."""
    admin = kafka.admin(admin_settings)
    await admin.start()
    try:
        async def one(acl: Acl) -> None:
            request = CreateAclsRequest(
                RESOURCE_TYPES[acl.resource], acl.name, PATTERN_TYPES[acl.pattern],
                acl.principal, "*", OPERATIONS[acl.operation], ALLOW)
            response = await admin._send_request(request)  # aiokafka has no create_acls
            for code, message in response.creation_responses:
                if code:
                    raise AclError(f"cannot create ACL {acl.describe()}: error {code} {message}")

        await asyncio.gather(*(one(acl) for acl in acls))
    finally:
        await admin.close()


async def provision(admin_settings: Settings, users: Mapping[str, str] | None = None) -> None:
    """As the admin: create every topic of the deployment, then the services' ACLs."""
    await ensure_topics(admin_settings, TOPICS)
    await create_acls(admin_settings, service_acls(admin_settings, users))
