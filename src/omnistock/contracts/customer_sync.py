"""What the customer-sync service reads: the order and payment topics, as one consumer group.
It publishes nothing; the apps read its HTTP API."""

from __future__ import annotations

from omnistock.platform.kafka import TopicSpec, dead_letter_topic

TIMELINE_GROUP = "omnistock.customer-sync.timeline"
TIMELINE_DEAD_LETTERS = TopicSpec(
    dead_letter_topic(TIMELINE_GROUP),
    partitions=1,
    description="Events customer-sync could not read, with the reason.",
)
TOPICS = [TIMELINE_DEAD_LETTERS]
