"""Rebuilding the view: drop it, forget which events were applied, and move the consumer
group back to the start of its topics. The group must have no member (the service stopped):
the broker refuses to move the offsets of an active group."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from confluent_kafka import Consumer, TopicPartition

from omnistock.customer_sync import repository
from omnistock.platform.kafka import consumer_config
from omnistock.platform.settings import Settings


async def forget(conn: asyncpg.Connection, group: str) -> None:
    async with conn.transaction():
        await repository.forget_view(conn)
        await conn.execute(
            """DELETE FROM inbox WHERE group_id =
                   (SELECT group_id FROM consumer_groups WHERE name = $1)""",
            group,
        )


def rewind(settings: Settings, group: str, topics: Sequence[str], timeout_s: float = 30) -> int:
    """Commit the group's offsets at the first message still held of each partition."""
    consumer = Consumer(consumer_config(settings, group))
    try:
        offsets = []
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=timeout_s).topics[topic]
            for partition in metadata.partitions:
                low, _ = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=timeout_s
                )
                offsets.append(TopicPartition(topic, partition, low))
        consumer.commit(offsets=offsets, asynchronous=False)
        return len(offsets)
    finally:
        consumer.close()
