"""Everything services share about each other: event payloads, their types, topics and schemas.

Importing this package registers every event type, so any consumer can validate any event.
"""

from omnistock.contracts import (
    collection_points,
    demo,
    inventory,
    loyalty,
    orders,
    payments,
    pricing,
)
from omnistock.contracts.topics import ALL_TOPICS

__all__ = [
    "ALL_TOPICS",
    "collection_points",
    "demo",
    "inventory",
    "loyalty",
    "orders",
    "payments",
    "pricing",
]
