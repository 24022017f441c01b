"""Events of the inventory service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omnistock.platform.events import event_type
from omnistock.platform.kafka import TopicSpec

AVAILABILITY = TopicSpec(
    "omnistock.inventory.availability.v1",
    compacted=True,
    description="What each channel can sell of each SKU; compacted, keyed `channel:sku`.",
)
MOVEMENTS = TopicSpec(
    "omnistock.inventory.stock-movements.v1",
    description="Every change of on-hand stock (the ledger), keyed `sku@location`.",
)
RESERVATIONS = TopicSpec(
    "omnistock.inventory.reservations.v1",
    description="Reservation lifecycle, keyed by reservation id.",
)
ALLOCATIONS = TopicSpec(
    "omnistock.inventory.allocations.v1",
    description="Order lines assigned to locations, shipped or released; keyed by order id, "
    "`aggregateversion` one more for each of the order's events.",
)
SHORTAGES = TopicSpec(
    "omnistock.inventory.shortages.v1",
    description="Counted stock fell below what was held; keyed `sku@location`, versioned as "
    "the count's movement in `stock-movements`.",
)
TOPICS = [AVAILABILITY, MOVEMENTS, RESERVATIONS, ALLOCATIONS, SHORTAGES]


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    location_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Allocation:
    allocation_id: str
    sku: str
    location_id: str
    quantity: int


@event_type
@dataclass(frozen=True, slots=True)
class AvailabilityChanged:
    """What a channel can promise of a SKU changed. Readers keep the highest version."""

    TYPE: ClassVar[str] = "omnistock.inventory.availability-changed.v1"
    TOPIC: ClassVar[str] = AVAILABILITY.name

    channel_id: str
    sku: str
    available: int
    version: int


@event_type
@dataclass(frozen=True, slots=True)
class StockMoved:
    """On-hand stock of a SKU at a location changed by ``quantity`` (signed) for ``reason``."""

    TYPE: ClassVar[str] = "omnistock.inventory.stock-moved.v1"
    TOPIC: ClassVar[str] = MOVEMENTS.name

    movement_id: int
    sku: str
    location_id: str
    quantity: int
    reason: str
    on_hand: int
    source: str | None = None
    reference: str | None = None


@event_type
@dataclass(frozen=True, slots=True)
class StockReserved:
    TYPE: ClassVar[str] = "omnistock.inventory.stock-reserved.v1"
    TOPIC: ClassVar[str] = RESERVATIONS.name

    reservation_id: str
    channel_id: str
    lines: list[Line]
    expires_at: str
    customer_id: str | None = None


@event_type
@dataclass(frozen=True, slots=True)
class ReservationExtended:
    TYPE: ClassVar[str] = "omnistock.inventory.reservation-extended.v1"
    TOPIC: ClassVar[str] = RESERVATIONS.name

    reservation_id: str
    expires_at: str


@event_type
@dataclass(frozen=True, slots=True)
class ReservationReleased:
    """Held stock went back to sale: ``reason`` is released, expired or shortage."""

    TYPE: ClassVar[str] = "omnistock.inventory.reservation-released.v1"
    TOPIC: ClassVar[str] = RESERVATIONS.name

    reservation_id: str
    reason: str
    lines: list[Line]


@event_type
@dataclass(frozen=True, slots=True)
class ReservationCommitted:
    """A reservation became the allocations of an order."""

    TYPE: ClassVar[str] = "omnistock.inventory.reservation-committed.v1"
    TOPIC: ClassVar[str] = RESERVATIONS.name

    reservation_id: str
    order_id: str


@event_type
@dataclass(frozen=True, slots=True)
class StockAllocated:
    TYPE: ClassVar[str] = "omnistock.inventory.stock-allocated.v1"
    TOPIC: ClassVar[str] = ALLOCATIONS.name

    order_id: str
    channel_id: str
    allocations: list[Allocation]


@event_type
@dataclass(frozen=True, slots=True)
class AllocationShipped:
    TYPE: ClassVar[str] = "omnistock.inventory.allocation-shipped.v1"
    TOPIC: ClassVar[str] = ALLOCATIONS.name

    order_id: str
    allocation_id: str
    shipment_id: str


@event_type
@dataclass(frozen=True, slots=True)
class AllocationReleased:
    TYPE: ClassVar[str] = "omnistock.inventory.allocation-released.v1"
    TOPIC: ClassVar[str] = ALLOCATIONS.name

    order_id: str
    allocation_id: str
    reason: str


@event_type
@dataclass(frozen=True, slots=True)
class StockShortage:
    """A count put on-hand stock below what was held: these holds were cut to fit."""

    TYPE: ClassVar[str] = "omnistock.inventory.stock-shortage.v1"
    TOPIC: ClassVar[str] = SHORTAGES.name

    sku: str
    location_id: str
    on_hand: int
    reservation_ids: list[str]
    allocation_ids: list[str]
    order_ids: list[str]
