"""Events of the orders service.

One stream, keyed by order id, with the order id as subject and the order's version as
``aggregateversion``: every change of an order's status is one version, one row of its history
and one event here. A reader keeps the highest version it has seen and drops older ones. Amounts
are integers in minor units of ``currency``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omnistock.platform.events import event_type
from omnistock.platform.kafka import TopicSpec, dead_letter_topic

ORDERS = TopicSpec(
    "omnistock.orders.orders.v1",
    description="Order lifecycle: placed, each status change of its saga, cancelled with a "
    "reason; keyed by order id.",
)
PAYMENT_DECISIONS_GROUP = "omnistock.orders.payment-decisions"
"""The orders service's consumer group on the payments topic."""
PAYMENT_DECISIONS_DEAD_LETTERS = TopicSpec(
    dead_letter_topic(PAYMENT_DECISIONS_GROUP),
    partitions=1,
    description="Payments events the orders service could not read, with the reason.",
)
FULFILMENT_GROUP = "omnistock.orders.fulfilment"
"""The orders service's consumer group on inventory's allocations topic (shipments)."""
FULFILMENT_DEAD_LETTERS = TopicSpec(
    dead_letter_topic(FULFILMENT_GROUP),
    partitions=1,
    description="Inventory allocation events the orders service could not read, with the reason.",
)
TOPICS = [ORDERS, PAYMENT_DECISIONS_DEAD_LETTERS, FULFILMENT_DEAD_LETTERS]


@dataclass(frozen=True, slots=True)
class OrderLine:
    sku: str
    quantity: int
    unit_price: int


@event_type
@dataclass(frozen=True, slots=True)
class OrderPlaced:
    """An order was accepted (prices checked, stock reserved at checkout); its saga starts.
    ``delivery`` is ``home``, ``store`` or ``locker``; ``payment_method`` is ``card``,
    ``pay_later`` or ``try_before_you_buy``."""

    TYPE: ClassVar[str] = "omnistock.orders.order-placed.v1"
    TOPIC: ClassVar[str] = ORDERS.name

    order_id: str
    customer_id: str
    channel_id: str
    platform: str
    version: int
    status: str
    reservation_id: str
    currency: str
    total: int
    lines: list[OrderLine]
    delivery: str
    payment_method: str
    loyalty_points: int


@event_type
@dataclass(frozen=True, slots=True)
class OrderStatusChanged:
    """The order moved from ``previous_status`` to ``status``. ``reason`` is machine-readable
    (e.g. ``payment_declined``, ``cancelled_by_customer``, ``confirmation_timed_out``) and set
    when the move is towards cancellation; ``step`` names the saga step that caused the move."""

    TYPE: ClassVar[str] = "omnistock.orders.order-status-changed.v1"
    TOPIC: ClassVar[str] = ORDERS.name

    order_id: str
    customer_id: str
    version: int
    status: str
    previous_status: str
    reason: str | None
    step: str | None


@dataclass(frozen=True, slots=True)
class ItemCount:
    sku: str
    quantity: int


@event_type
@dataclass(frozen=True, slots=True)
class ShipmentUpdated:
    """A parcel of the order left a location (``shipped``, with the units in it) or reached
    the customer (``delivered``). An order may ship in several parcels."""

    TYPE: ClassVar[str] = "omnistock.orders.shipment-updated.v1"
    TOPIC: ClassVar[str] = ORDERS.name

    order_id: str
    customer_id: str
    version: int
    shipment_id: str
    status: str
    items: list[ItemCount]


@event_type
@dataclass(frozen=True, slots=True)
class ReturnUpdated:
    """Goods coming back: ``kind`` is ``trial`` (sent back from a try-before-you-buy trial,
    never charged) or ``rma`` (after completion, refunded); ``status`` is ``requested``,
    ``received`` (restocking and refund under way) or ``settled``. ``refund_amount`` in minor
    units of the order's currency."""

    TYPE: ClassVar[str] = "omnistock.orders.return-updated.v1"
    TOPIC: ClassVar[str] = ORDERS.name

    order_id: str
    customer_id: str
    version: int
    return_id: str
    kind: str
    status: str
    refund_amount: int
    items: list[ItemCount]
