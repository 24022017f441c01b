"""The one subscription of customer-sync: every order, payment, loyalty and parcel event
becomes changes to the apps' view and, for some, a notification; both in the batch's
transaction, with the inbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg

from omnistock.contracts import collection_points, loyalty, orders, payments
from omnistock.customer_sync import repository
from omnistock.customer_sync.projection import changes_of, notices_of
from omnistock.platform.clock import Clock
from omnistock.platform.consumer import Handler, Subscription
from omnistock.platform.events import Event, registered_types

TYPES = [
    name
    for name, cls in registered_types().items()
    if getattr(cls, "TOPIC", None)
    in (
        orders.ORDERS.name,
        payments.PAYMENTS.name,
        loyalty.MEMBERS.name,
        collection_points.PARCELS.name,
        collection_points.PICKUP_CODES.name,
    )
]


def project(clock: Clock, trial_reminder: timedelta) -> Handler:
    async def handle(conn: asyncpg.Connection, batch: Sequence[Event[Any]]) -> None:
        changes = [c for e in batch for c in changes_of(e.data, e.time)]
        notices = [n for e in batch for n in notices_of(e.data, e.time, trial_reminder)]
        if changes:
            await repository.apply(conn, changes)
        if notices:
            await repository.record_notices(conn, notices, clock.now())

    return handle


def subscription(
    clock: Clock, group: str, topics: Sequence[str], trial_reminder: timedelta
) -> Subscription:
    handler = project(clock, trial_reminder)
    return Subscription(group=group, topics=list(topics), handlers=dict.fromkeys(TYPES, handler))
