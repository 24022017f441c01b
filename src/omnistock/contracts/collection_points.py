"""Events of the collection-points service.

Three streams, each for its own readers:

- ``slots``, keyed by point id: a slot of a point taken or freed, with the point's occupancy
  after it. The subject is the point id and ``aggregateversion`` the version of the point's
  occupancy (one step per slot taken or freed): a reader keeps the highest and has the free
  count of every point.
- ``parcels``, keyed by order id (an order's saga reads them on the partition of its own
  events): a parcel arrived, was collected, or expired uncollected. The subject is the booking
  id and ``aggregateversion`` the booking's version. No pickup code travels here, not even a
  hash: every reader of this topic (sagas, analytics, bridges) could otherwise collect any
  parcel, and a hash of a short code is undone by trying every code.
- ``pickup-codes``, keyed by order id: the code a customer shows, for customer-sync alone,
  which tells the customer's app. Kept only as long as a parcel may wait; in production the
  topic's ACL admits customer-sync's principal and nothing else.

Times are ISO 8601 in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omnistock.platform.events import event_type
from omnistock.platform.kafka import TopicSpec

SLOTS = TopicSpec(
    "omnistock.collection-points.slots.v1",
    description="Slots of stores and lockers taken and freed, with the point's occupancy after "
    "each; keyed by point id.",
)
PARCELS = TopicSpec(
    "omnistock.collection-points.parcels.v1",
    description="Parcels at collection points: arrived, collected, expired (back to the "
    "sender); keyed by order id. Carries no pickup code.",
)
PICKUP_CODES = TopicSpec(
    "omnistock.collection-points.pickup-codes.v1",
    # As long as a parcel may wait (30 days at most) and a day more: the codes are secrets.
    retention_ms=31 * 24 * 3600 * 1000,
    description="Pickup codes of arrived parcels, for customer-sync only (restricted by ACL "
    "in production); keyed by order id.",
)
TOPICS = [SLOTS, PARCELS, PICKUP_CODES]


@event_type
@dataclass(frozen=True, slots=True)
class SlotBooked:
    """A slot of the point was booked for an order. ``free`` is what is left (null: the point
    has no limit, a store without a capacity)."""

    TYPE: ClassVar[str] = "omnistock.collection-points.slot-booked.v1"
    TOPIC: ClassVar[str] = SLOTS.name

    point_id: str
    market: str
    booking_id: str
    order_id: str
    version: int
    capacity: int | None
    occupied: int
    free: int | None


@event_type
@dataclass(frozen=True, slots=True)
class SlotReleased:
    """A slot of the point was freed: its parcel was ``collected``, ``expired``, or the booking
    was ``released`` before a parcel arrived (``reason``)."""

    TYPE: ClassVar[str] = "omnistock.collection-points.slot-released.v1"
    TOPIC: ClassVar[str] = SLOTS.name

    point_id: str
    market: str
    booking_id: str
    order_id: str
    version: int
    capacity: int | None
    occupied: int
    free: int | None
    reason: str


@event_type
@dataclass(frozen=True, slots=True)
class ParcelArrived:
    """The order's parcel is at the point and waits until ``collect_by``. The pickup code is
    not here: it goes to customer-sync alone (``pickup-code-issued``)."""

    TYPE: ClassVar[str] = "omnistock.collection-points.parcel-arrived.v1"
    TOPIC: ClassVar[str] = PARCELS.name

    booking_id: str
    order_id: str
    customer_id: str
    point_id: str
    point_kind: str
    market: str
    version: int
    status: str
    arrived_at: str
    collect_by: str


@event_type
@dataclass(frozen=True, slots=True)
class ParcelCollected:
    """The customer collected the order's parcel with its pickup code."""

    TYPE: ClassVar[str] = "omnistock.collection-points.parcel-collected.v1"
    TOPIC: ClassVar[str] = PARCELS.name

    booking_id: str
    order_id: str
    customer_id: str
    point_id: str
    version: int
    status: str
    collected_at: str


@event_type
@dataclass(frozen=True, slots=True)
class ParcelExpired:
    """The parcel was not collected by its deadline: the slot is free and the parcel goes back
    (``disposition`` ``return_to_sender``); the order takes it back as a return."""

    TYPE: ClassVar[str] = "omnistock.collection-points.parcel-expired.v1"
    TOPIC: ClassVar[str] = PARCELS.name

    booking_id: str
    order_id: str
    customer_id: str
    point_id: str
    version: int
    status: str
    arrived_at: str
    collect_by: str
    expired_at: str
    disposition: str


@event_type
@dataclass(frozen=True, slots=True)
class PickupCodeIssued:
    """The code the customer shows to collect the order's parcel, valid until ``collect_by``.
    A secret: only customer-sync reads this stream."""

    TYPE: ClassVar[str] = "omnistock.collection-points.pickup-code-issued.v1"
    TOPIC: ClassVar[str] = PICKUP_CODES.name

    booking_id: str
    order_id: str
    customer_id: str
    point_id: str
    version: int
    pickup_code: str
    collect_by: str
