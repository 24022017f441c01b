"""What the loyalty service reads from Kafka: the orders topic, through the inbox.

- ``order-placed``: the order's account and lines (what it may earn);
- ``order-status-changed``: ``completed`` schedules the earning, ``cancelled`` gives back what
  the order holds;
- ``return-updated``: lines sent back from a trial, or returned afterwards, are not kept.

The inbox drops a redelivered event; the order's version drops an older one; a return counts
once however many updates it has. Shipments say nothing the programme needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from omnistock.contracts.orders import ORDERS, OrderPlaced, OrderStatusChanged, ReturnUpdated
from omnistock.loyalty import service
from omnistock.loyalty.domain import Policy
from omnistock.loyalty.settings import LoyaltySettings
from omnistock.platform.clock import Clock, SystemClock
from omnistock.platform.consumer import Handler, Subscription
from omnistock.platform.events import Event


def order_placed(clock: Clock, policy: Policy) -> Handler:
    async def handle(conn: asyncpg.Connection, batch: Sequence[Event[Any]]) -> None:
        for event in batch:
            await service.record_order(conn, clock, policy, event.data)

    return handle


def order_status_changed(clock: Clock, policy: Policy) -> Handler:
    async def handle(conn: asyncpg.Connection, batch: Sequence[Event[Any]]) -> None:
        for event in batch:
            # The event's time is when the order changed: a consumer that lags behind must
            # not move the end of the return window.
            await service.order_status_changed(conn, clock, policy, event.data, event.time)

    return handle


def return_updated(clock: Clock, policy: Policy) -> Handler:
    async def handle(conn: asyncpg.Connection, batch: Sequence[Event[Any]]) -> None:
        for event in batch:
            await service.return_updated(conn, clock, policy, event.data)

    return handle


def subscription(clock: Clock, policy: Policy, group: str) -> Subscription:
    return Subscription(
        group=group,
        topics=[ORDERS.name],
        handlers={
            OrderPlaced.TYPE: order_placed(clock, policy),
            OrderStatusChanged.TYPE: order_status_changed(clock, policy),
            ReturnUpdated.TYPE: return_updated(clock, policy),
        },
    )


def subscriptions() -> list[Subscription]:
    """For ``omnistock worker loyalty``: the consumer with the settings of the environment."""
    own = LoyaltySettings()
    return [subscription(SystemClock(), own.policy(), own.orders_group)]
