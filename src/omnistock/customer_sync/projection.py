"""How events become the apps' view, pure: each event names an entry (an order, a payment, a
parcel, a return) and sets some of its fields at the event's version.

Every field keeps the version that wrote it and only a higher version replaces it. An entry is
thus the same whatever order its events arrive in, and however often: shuffled, duplicated or
replayed from the start of the topics, the view ends identical. (Replacing whole entries by the
newest version would lose a field that only an older event carries, such as an order's total.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from omnistock.contracts import collection_points as places
from omnistock.contracts import loyalty, orders, payments

Fields = dict[str, list[Any]]
"""field name → [version, value]"""


@dataclass(frozen=True, slots=True)
class Change:
    kind: str  # order | payment | shipment | return | member | parcel
    entity_id: str
    version: int
    values: Mapping[str, Any]
    customer_id: str | None = None
    order_id: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """A push notification the customer's app should get, once per ``(kind, key)``."""

    kind: str  # order_confirmed | order_shipped | ready_for_pickup | trial_ending | refund_made
    key: str
    order_id: str
    customer_id: str | None
    due_at: datetime
    details: Mapping[str, Any] = field(default_factory=dict)


STATUS_NOTICES = {
    "confirmed": "order_confirmed",
    "shipped": "order_shipped",
    "ready_for_pickup": "ready_for_pickup",
}


def merge(fields: Fields, version: int, values: Mapping[str, Any]) -> Fields:
    """``fields`` with ``values`` written at ``version`` where that is newer than what is
    there; a repeat of the same version changes nothing."""
    merged = dict(fields)
    for name, value in values.items():
        held = merged.get(name)
        if held is None or version > held[0]:
            merged[name] = [version, value]
    return merged


def fold(entry: dict[str, Any] | None, change: Change) -> dict[str, Any]:
    """The entry (as stored: kind, entity_id, customer_id, order_id, version, fields) after
    ``change``; None: the entry's first change."""
    entry = entry or {
        "kind": change.kind,
        "entity_id": change.entity_id,
        "customer_id": None,
        "order_id": None,
        "version": 0,
        "fields": {},
    }
    return {
        **entry,
        "fields": merge(entry["fields"], change.version, change.values),
        "version": max(entry["version"], change.version),
        "customer_id": entry["customer_id"] or change.customer_id,
        "order_id": entry["order_id"] or change.order_id,
    }


def changes_of(event: Any, at: datetime) -> list[Change]:
    """What ``event`` (a contract payload) changes in the view; nothing for types it ignores."""
    if isinstance(event, orders.OrderPlaced):
        return [
            Change(
                "order",
                event.order_id,
                event.version,
                {
                    "status": event.status,
                    "channel_id": event.channel_id,
                    "platform": event.platform,
                    "currency": event.currency,
                    "total": event.total,
                    "lines": [
                        {"sku": x.sku, "quantity": x.quantity, "unit_price": x.unit_price}
                        for x in event.lines
                    ],
                    "delivery": event.delivery,
                    "payment_method": event.payment_method,
                    "placed_at": at.isoformat(),
                },
                event.customer_id,
                event.order_id,
            )
        ]
    if isinstance(event, orders.OrderStatusChanged):
        values: dict[str, Any] = {"status": event.status, "updated_at": at.isoformat()}
        if event.status == "cancelled":
            values["cancel_reason"] = event.reason
        return [
            Change(
                "order", event.order_id, event.version, values, event.customer_id, event.order_id
            )
        ]
    if isinstance(event, orders.ShipmentUpdated):
        values = {"status": event.status, f"{event.status}_at": at.isoformat()}
        if event.items:
            values["items"] = [{"sku": x.sku, "quantity": x.quantity} for x in event.items]
        return [
            Change(
                "shipment",
                f"{event.order_id}:{event.shipment_id}",
                event.version,
                values,
                event.customer_id,
                event.order_id,
            )
        ]
    if isinstance(event, orders.ReturnUpdated):
        return [
            Change(
                "return",
                event.return_id,
                event.version,
                {
                    "status": event.status,
                    "kind": event.kind,
                    "refund_amount": event.refund_amount,
                    "items": [{"sku": x.sku, "quantity": x.quantity} for x in event.items],
                    f"{event.status}_at": at.isoformat(),
                },
                event.customer_id,
                event.order_id,
            )
        ]
    if isinstance(event, LOYALTY_EVENTS):
        return _points_changes(event)
    if isinstance(event, PARCEL_EVENTS):
        return _parcel_changes(event)
    return _payment_changes(event, at)


LOYALTY_EVENTS = (
    loyalty.PointsHeld,
    loyalty.PointsCommitted,
    loyalty.PointsReleased,
    loyalty.PointsEarned,
    loyalty.PointsReversed,
    loyalty.PointsExpired,
    loyalty.TierChanged,
)
PARCEL_EVENTS = (
    places.ParcelArrived,
    places.ParcelCollected,
    places.ParcelExpired,
    places.PickupCodeIssued,
)


def _points_changes(event: Any) -> list[Change]:
    """A loyalty account: its balance and held points after each change, and its tier."""
    values: dict[str, Any] = {}
    for name in ("balance", "held", "tier", "brand_group", "market"):
        if hasattr(event, name):
            values[name] = getattr(event, name)
    return [Change("member", event.member_id, event.version, values, event.customer_id)]


def _parcel_changes(event: Any) -> list[Change]:
    """A parcel at a store or locker: where, until when, its state and the pickup code."""
    values: dict[str, Any] = {"point_id": event.point_id}
    if not isinstance(event, places.PickupCodeIssued):
        values["status"] = event.status
    for name in (
        "point_kind",
        "market",
        "arrived_at",
        "collect_by",
        "collected_at",
        "expired_at",
        "pickup_code",
    ):
        if hasattr(event, name):
            values[name] = getattr(event, name)
    return [
        Change("parcel", event.booking_id, event.version, values, event.customer_id, event.order_id)
    ]


def _payment_changes(event: Any, at: datetime) -> list[Change]:
    if isinstance(event, payments.PaymentCreated):
        values: dict[str, Any] = {
            "status": event.status,
            "method": event.method,
            "amount": event.amount,
            "currency": event.currency,
        }
        return [
            Change(
                "payment",
                event.payment_id,
                event.version,
                values,
                event.customer_id,
                event.order_id,
            )
        ]
    if not hasattr(event, "payment_id") or not hasattr(event, "version"):
        return []
    values = {"status": event.status, "updated_at": at.isoformat()}
    for name in ("captured", "refunded"):
        if hasattr(event, name):
            values[name] = getattr(event, name)
    if isinstance(event, payments.TrialWindowSet):
        values["trial_ends_at"] = event.ends_at
    return [Change("payment", event.payment_id, event.version, values, None, event.order_id)]


def notices_of(event: Any, at: datetime, trial_reminder: timedelta) -> list[Notice]:
    if isinstance(event, orders.OrderStatusChanged) and event.status in STATUS_NOTICES:
        kind = STATUS_NOTICES[event.status]
        return [Notice(kind, event.order_id, event.order_id, event.customer_id, at)]
    if isinstance(event, places.ParcelArrived):
        # The same notice as the order's own ready_for_pickup: whichever comes first counts.
        return [
            Notice(
                "ready_for_pickup",
                event.order_id,
                event.order_id,
                event.customer_id,
                at,
                {"point_id": event.point_id, "collect_by": event.collect_by},
            )
        ]
    if isinstance(event, payments.TrialWindowSet):
        ends = datetime.fromisoformat(event.ends_at)
        return [
            Notice(
                "trial_ending",
                event.order_id,
                event.order_id,
                None,
                max(ends - trial_reminder, at),
                {"ends_at": event.ends_at},
            )
        ]
    if isinstance(event, payments.PaymentRefunded):
        return [
            Notice(
                "refund_made",
                event.operation_id,
                event.order_id,
                None,
                at,
                {"amount": event.amount, "currency": event.currency},
            )
        ]
    return []
