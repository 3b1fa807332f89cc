"""Every topic of SPEC, declared once with its partitions and retention policy.

The broker refuses to auto-create topics (a typo must not create a stray one-partition
topic), so each entry point declares what it uses before it starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from common import kafka
from common.errors import SegmentsError
from common.settings import Settings

#: Raw Stripe events in their envelope (connectors/ writes, stream/ reads).
EVENTS_TOPIC = "stripe.events"
#: Raw events the stream could not understand, with the reason.
DLQ_TOPIC = "stripe.events.dlq"
#: One normalized fact per real-world occurrence, keyed by account + email.
FACTS_TOPIC = "stripe.facts"
#: Rules, compacted, one partition: every worker reads all of them in order.
RULES_TOPIC = "segments.rules"
#: Joined/left events, the change feed Center follows.
MEMBERSHIP_TOPIC = "segments.membership"
#: Current state per member, compacted: rebuilds the whole picture.
MEMBERS_TOPIC = "segments.members"
#: Per (account, segment, membership partition): the rule version that partition has
#: computed from the history it holds (compacted, one partition; the query API reads it
#: to answer a segment's `status`, see stream/status.py).
STATUS_TOPIC = "segments.status"
#: Internal: rule changes fanned out to every membership partition, and clock ticks.
CONTROL_TOPIC = "segments.control"
#: Internal repartition topic: charges' payers and refunds to attribute, keyed by
#: connection + charge id, so a refund meets its charge's payer on one partition
#: whichever partitions their raw events landed on (stream/attribution.py).
BY_CHARGE_TOPIC = "segments.by-charge"
#: Connections (which Stripe account feeds which account, with its Fernet-encrypted API
#: key and webhook secrets), compacted, one partition: the system of record; Redis only
#: caches it (connectors/connection_log.py). Tiny volume, and one total order of writes.
CONNECTIONS_TOPIC = "segments.connections"
#: The named states of the worker, each with its changelog (stream/state.py).
#: `charges` (payers) and `waiting` (refunds before their payer) are partitioned by
#: charge, like `segments.by-charge`; the others like the topic their keys come from.
STATE_NAMES = ("customers", "charges", "waiting", "seen", "parked", "contacts", "rules",
               "rule_times")


def state_topic(name: str) -> str:
    """The changelog topic of one named state (before the prefix)."""
    return f"segments.state.{name}"


class KafkaTopicError(SegmentsError, RuntimeError):
    """The broker refused to create a topic (bad config, too few brokers, ACLs)."""

    retriable = False


DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    compacted: bool = False
    retention_ms: int | None = None
    #: One partition where order across all keys matters (rules) or volume is tiny.
    single_partition: bool = False


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(EVENTS_TOPIC, retention_ms=7 * DAY_MS),
    TopicSpec(DLQ_TOPIC, retention_ms=30 * DAY_MS),
    TopicSpec(FACTS_TOPIC, retention_ms=35 * DAY_MS),
    TopicSpec(RULES_TOPIC, compacted=True, single_partition=True),
    TopicSpec(MEMBERSHIP_TOPIC, retention_ms=7 * DAY_MS),
    TopicSpec(MEMBERS_TOPIC, compacted=True),
    TopicSpec(STATUS_TOPIC, compacted=True, single_partition=True),
    TopicSpec(CONTROL_TOPIC, retention_ms=DAY_MS),
    TopicSpec(BY_CHARGE_TOPIC, retention_ms=7 * DAY_MS),
    TopicSpec(CONNECTIONS_TOPIC, compacted=True, single_partition=True),
    *(TopicSpec(state_topic(name), compacted=True) for name in STATE_NAMES),
)


#: Kafka's error codes for a principal without the ACL an operation needs.
TOPIC_AUTHORIZATION_FAILED = 29
CLUSTER_AUTHORIZATION_FAILED = 31


def min_insync_replicas(replication_factor: int) -> int | None:
    """2 when there are 3 or more replicas: an `acks=all` write then survives the loss
    of any one broker and is refused (not silently under-replicated) when two are gone.
    Below 3 the broker's default (1) stands: 2 of 2 would stop writes on any loss."""
    return 2 if replication_factor >= 3 else None


#: Which process reads and writes which topic (names before the prefix): what each one
#: declares at start, and the ACLs a secured cluster grants it (segments/stack/acls.py,
#: README "Deploying on a secured cluster").
#: The connector writes raw events, and erasure records when a connection is purged.
CONNECTOR_WRITES: tuple[str, ...] = (EVENTS_TOPIC, CONTROL_TOPIC)
STATE_TOPICS: tuple[str, ...] = tuple(state_topic(name) for name in STATE_NAMES)
WORKER_READS: tuple[str, ...] = (EVENTS_TOPIC, BY_CHARGE_TOPIC, FACTS_TOPIC, CONTROL_TOPIC,
                                 RULES_TOPIC, *STATE_TOPICS)
WORKER_WRITES: tuple[str, ...] = (FACTS_TOPIC, DLQ_TOPIC, BY_CHARGE_TOPIC, CONTROL_TOPIC,
                                  MEMBERSHIP_TOPIC, MEMBERS_TOPIC, STATUS_TOPIC,
                                  *STATE_TOPICS)
WORKER_TOPICS: tuple[str, ...] = tuple(dict.fromkeys((*WORKER_READS, *WORKER_WRITES)))
API_READS: tuple[str, ...] = (MEMBERSHIP_TOPIC, MEMBERS_TOPIC, RULES_TOPIC, STATUS_TOPIC)
#: Rules over HTTP (transactional writes), and erasure records (`forget`).
API_WRITES: tuple[str, ...] = (RULES_TOPIC, CONTROL_TOPIC)


def topic_configs(spec: TopicSpec, replication_factor: int = 1) -> dict[str, str]:
    if spec.compacted:
        configs = {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"}
    else:
        configs = {"cleanup.policy": "delete"}
        if spec.retention_ms is not None:
            configs["retention.ms"] = str(spec.retention_ms)
    min_isr = min_insync_replicas(replication_factor)
    if min_isr is not None:
        configs["min.insync.replicas"] = str(min_isr)
    return configs


def specs_named(*names: str) -> tuple[TopicSpec, ...]:
    """The specs of `names` (before the prefix), for a process that uses only those."""
    found = tuple(spec for spec in TOPICS if spec.name in names)
    if len(found) != len(set(names)):
        raise ValueError(f"unknown topic among {names}")
    return found


async def ensure_topics(settings: Settings, specs: tuple[TopicSpec, ...] = TOPICS) -> list[str]:
    """Create whichever of `specs` do not exist yet; returns the names created."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = kafka.admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=settings.topic(spec.name),
                num_partitions=1 if spec.single_partition else settings.partitions,
                replication_factor=settings.replication_factor,
                topic_configs=topic_configs(spec, settings.replication_factor),
            )
            for spec in specs
            if settings.topic(spec.name) not in existing
        ]
        if wanted:
            response = await admin.create_topics(wanted)
            for name, code, *rest in response.topic_errors:
                # Another process winning the race leaves the topic there either way.
                if code in (TOPIC_AUTHORIZATION_FAILED, CLUSTER_AUTHORIZATION_FAILED):
                    raise KafkaTopicError(
                        f"cannot create topic {name}: this principal may not create topics "
                        "(on a secured cluster an admin creates them beforehand, see "
                        "README: Deploying on a secured cluster)")
                if code not in (0, TopicAlreadyExistsError.errno):
                    message = rest[0] if rest else ""
                    raise KafkaTopicError(f"cannot create topic {name}: error {code} {message}")
        return [t.name for t in wanted]
    finally:
        await admin.close()


async def delete_topics_with_prefix(settings: Settings, prefix: str) -> int:
    """Delete every topic whose name starts with `prefix` (tests, demos); returns count.

    Refuses an empty prefix: that would be every topic of the cluster.
    """
    if not prefix:
        raise ValueError("refusing to delete topics without a prefix")
    admin = kafka.admin(settings)
    await admin.start()
    try:
        doomed = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)
        return len(doomed)
    finally:
        await admin.close()
