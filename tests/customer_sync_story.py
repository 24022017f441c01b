"""One order's life as the orders and payments services publish it: the events customer-sync
reads, in the order they were written, for tests that shuffle, repeat and replay them."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from omnistock.contracts import collection_points as c
from omnistock.contracts import loyalty as lo
from omnistock.contracts import orders as o
from omnistock.contracts import payments as p

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Written:
    event_id: str
    payload: Any
    key: str  # the partition key: the aggregate's id
    version: int
    time: datetime


def _id(key: str, version: int) -> str:
    """Event ids are UUIDs; one per aggregate version, so a repeat carries the same id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{key}/{version}"))


def order_story(order_id: str, payment_id: str, customer_id: str) -> list[Written]:
    """A try-before-you-buy order of two lines, one sent back, refunded in part afterwards."""
    lines = [o.OrderLine("SKU-A", 1, 3_000), o.OrderLine("SKU-B", 2, 2_500)]
    status = ["placed", "allocated", "authorized", "confirmed"]
    events: list[Any] = [
        o.OrderPlaced(
            order_id,
            customer_id,
            "brand-pl",
            "ios",
            1,
            "placed",
            "r-1",
            "PLN",
            8_000,
            lines,
            "locker",
            "try_before_you_buy",
            0,
        )
    ]
    for version, (before, after) in enumerate(itertools.pairwise(status), start=2):
        events.append(
            o.OrderStatusChanged(order_id, customer_id, version, after, before, None, None)
        )
    events += [
        o.ShipmentUpdated(
            order_id, customer_id, 5, "parcel-1", "shipped", [o.ItemCount("SKU-A", 1)]
        ),
        o.ShipmentUpdated(
            order_id, customer_id, 6, "parcel-2", "shipped", [o.ItemCount("SKU-B", 2)]
        ),
        o.OrderStatusChanged(order_id, customer_id, 7, "shipped", "confirmed", None, None),
        o.OrderStatusChanged(order_id, customer_id, 8, "ready_for_pickup", "shipped", None, None),
        o.OrderStatusChanged(order_id, customer_id, 9, "collected", "ready_for_pickup", None, None),
        o.OrderStatusChanged(order_id, customer_id, 10, "in_trial", "collected", None, None),
        o.ReturnUpdated(
            order_id,
            customer_id,
            11,
            f"{order_id}-return",
            "trial",
            "requested",
            0,
            [o.ItemCount("SKU-B", 2)],
        ),
        o.OrderStatusChanged(
            order_id, customer_id, 12, "completed", "in_trial", None, "settle_payment"
        ),
        o.ReturnUpdated(
            order_id,
            customer_id,
            13,
            f"{order_id}-return",
            "trial",
            "received",
            0,
            [o.ItemCount("SKU-B", 2)],
        ),
        o.ReturnUpdated(
            order_id,
            customer_id,
            14,
            f"{order_id}-return",
            "trial",
            "settled",
            0,
            [o.ItemCount("SKU-B", 2)],
        ),
    ]
    payment_events: list[Any] = [
        p.PaymentCreated(
            payment_id, order_id, customer_id, 1, "created", "try_before_you_buy", 8_000, "PLN"
        ),
        p.OperationRequested(
            payment_id,
            order_id,
            2,
            "authorizing",
            "authorize",
            f"{payment_id}-op-1",
            8_000,
            "PLN",
            "request",
        ),
        p.PaymentAuthorized(
            payment_id, order_id, 3, "authorized", f"{payment_id}-op-1", 8_000, "PLN", None
        ),
        p.TrialWindowSet(
            payment_id, order_id, 4, "authorized", (START + timedelta(days=14)).isoformat()
        ),
        p.PaymentCaptured(
            payment_id,
            order_id,
            5,
            "partially_captured",
            f"{payment_id}-op-2",
            3_000,
            "PLN",
            3_000,
            5_000,
        ),
        p.PaymentVoided(
            payment_id, order_id, 6, "settled", f"{payment_id}-op-3", 5_000, "PLN", 3_000
        ),
        p.PaymentRefunded(
            payment_id, order_id, 7, "settled", f"{payment_id}-op-4", 1_000, "PLN", 1_000
        ),
    ]
    written = [
        Written(
            _id(order_id, e.version), e, order_id, e.version, START + timedelta(minutes=e.version)
        )
        for e in events
    ]
    written += [
        Written(
            _id(payment_id, e.version),
            e,
            payment_id,
            e.version,
            START + timedelta(minutes=e.version, seconds=30),
        )
        for e in payment_events
    ]
    booking, member = f"{order_id}-booking", f"{order_id}-member"
    arrived, collect_by = START + timedelta(minutes=8), START + timedelta(days=7, minutes=8)
    # (aggregate, event, minute written): the parcel at the locker and the points redeemed.
    others: list[tuple[str, Any, int]] = [
        (
            booking,
            c.ParcelArrived(
                booking,
                order_id,
                customer_id,
                "locker-waw-1",
                "locker",
                "PL",
                1,
                "arrived",
                arrived.isoformat(),
                collect_by.isoformat(),
            ),
            8,
        ),
        (
            booking,
            c.PickupCodeIssued(
                booking,
                order_id,
                customer_id,
                "locker-waw-1",
                1,
                "40418812",
                collect_by.isoformat(),
            ),
            8,
        ),
        (
            booking,
            c.ParcelCollected(
                booking,
                order_id,
                customer_id,
                "locker-waw-1",
                2,
                "collected",
                (arrived + timedelta(hours=5)).isoformat(),
            ),
            9,
        ),
        (member, lo.PointsHeld(member, customer_id, 1, order_id, 100, 400, 100), 1),
        (member, lo.PointsCommitted(member, customer_id, 2, order_id, 100, 400, 0), 12),
    ]
    written += [
        Written(
            _id(f"{key}/{type(e).__name__}", e.version),
            e,
            key,
            e.version,
            START + timedelta(minutes=minute, seconds=45),
        )
        for key, e, minute in others
    ]
    return sorted(written, key=lambda w: w.time)
