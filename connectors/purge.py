"""`DELETE /connections/{id}?purge=true`: ask every worker partition to erase everything
it holds of the connection's account (contacts, memberships, customer emails, parked
occurrences, charge payers), in its own transaction.

The record is the erasure record of `common.control` with no email. Contacts leave their
segments with cause `erased`, so `segments.members` and the read model drop them like
any leave. Refused while the account has another connection: that one still feeds the
same contacts.
"""

from __future__ import annotations

from common import kafka
from common.control import forget_record
from common.settings import Settings
from common.topics import CONTROL_TOPIC


async def request_purge(settings: Settings, account_id: str, connection_ids: list[str]) -> int:
    """Send the purge to every partition of `segments.control`; returns how many."""
    topic = settings.topic(CONTROL_TOPIC)
    record = forget_record(account_id, None, connection_ids)
    producer = kafka.producer(settings, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        sent = [await producer.send(topic, record, key=account_id.encode(), partition=partition)
                for partition in partitions]
        for future in sent:
            await future
    finally:
        await producer.stop()
    return len(partitions)
