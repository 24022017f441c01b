"""What the orders service reads from Kafka.

- The payments' decisions wake an order waiting on a pending authorization at once instead of
  at its next poll. The saga then asks payments again (under the same idempotency key) and
  takes the answer from there, so such an event only brings a step forward in time.
- Inventory's shipped allocations: the warehouse or store shipped part of an order; once all
  of it has left, the order is shipped. The inbox makes a redelivered event a no-op."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from omnistock.contracts.collection_points import PARCELS, ParcelExpired
from omnistock.contracts.inventory import ALLOCATIONS, AllocationShipped
from omnistock.contracts.payments import PAYMENTS, PaymentAuthorized, PaymentDeclined
from omnistock.orders import lifecycle, repository
from omnistock.platform.clock import Clock
from omnistock.platform.consumer import Handler, Subscription
from omnistock.platform.events import Event


def _ours(order_id: str) -> bool:
    """Whether an event's order id can be one of our orders (ours are UUIDs; other systems
    share the topics with ids of their own)."""
    try:
        uuid.UUID(order_id)
    except ValueError:
        return False
    return True


def payment_decided(clock: Clock) -> Handler:
    async def handle(conn: asyncpg.Connection, batch: Sequence[Event[Any]]) -> None:
        # A payment of something that is not one of our orders is not ours to wake.
        order_ids = [uuid.UUID(e.data.order_id) for e in batch if _ours(e.data.order_id)]
        await repository.wake(conn, order_ids, "authorize_payment", clock.now())

    return handle


def subscription(clock: Clock, group: str) -> Subscription:
    handler = payment_decided(clock)
    return Subscription(
        group=group,
        topics=[PAYMENTS.name],
        handlers={PaymentAuthorized.TYPE: handler, PaymentDeclined.TYPE: handler},
    )


def allocation_shipped(clock: Clock) -> Handler:
    async def handle(conn: asyncpg.Connection, batch: Sequence[Event[Any]]) -> None:
        for event in batch:
            shipped: AllocationShipped = event.data
            if not _ours(shipped.order_id):
                continue
            await lifecycle.record_shipment(
                conn, clock, shipped.order_id, shipped.allocation_id, shipped.shipment_id
            )

    return handle


def parcel_expired(clock: Clock) -> Handler:
    async def handle(conn: asyncpg.Connection, batch: Sequence[Event[Any]]) -> None:
        for event in batch:
            expired: ParcelExpired = event.data
            if not _ours(expired.order_id):
                continue
            await lifecycle.parcel_expired(conn, clock, expired.order_id)

    return handle


def fulfilment_subscription(clock: Clock, group: str) -> Subscription:
    return Subscription(
        group=group,
        topics=[ALLOCATIONS.name, PARCELS.name],
        handlers={
            AllocationShipped.TYPE: allocation_shipped(clock),
            ParcelExpired.TYPE: parcel_expired(clock),
        },
    )
