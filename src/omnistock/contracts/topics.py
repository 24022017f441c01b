"""Every topic omnistock creates, gathered from each service's contract module."""

from __future__ import annotations

from omnistock.contracts import (
    collection_points,
    customer_sync,
    demo,
    inventory,
    loyalty,
    orders,
    payments,
    pricing,
)
from omnistock.platform.kafka import TopicSpec

ALL_TOPICS: list[TopicSpec] = [
    *demo.TOPICS,
    *inventory.TOPICS,
    *pricing.TOPICS,
    *payments.TOPICS,
    *orders.TOPICS,
    *loyalty.TOPICS,
    *customer_sync.TOPICS,
    *collection_points.TOPICS,
]
