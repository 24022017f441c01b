"""A collection point: a store or a parcel locker in a market, where it is, when it is open,
what it offers, and how many of its slots are taken."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from omnistock.collection_points.domain.errors import Conflict, NoFreeSlot, Refused
from omnistock.collection_points.domain.geo import Position
from omnistock.collection_points.domain.hours import OpeningHours, is_open, zone

MAX_PICKUP_DAYS = 30
MAX_CAPACITY = 10_000


class Kind(StrEnum):
    STORE = "store"
    LOCKER = "locker"


class Capability(StrEnum):
    PICKUP = "pickup"
    RETURNS = "returns"  # takes parcels back from customers
    FITTING_ROOM = "fitting_room"  # try on before taking a parcel away (stores)
    STEP_FREE_ACCESS = "step_free_access"
    OVERSIZED_PARCELS = "oversized_parcels"
    PAYMENT_ON_PICKUP = "payment_on_pickup"


@dataclass(frozen=True, slots=True)
class Address:
    street: str
    postcode: str
    city: str


@dataclass(frozen=True, slots=True)
class PointDetails:
    """What an administrator sets; the slots taken are the service's own business."""

    market: str
    kind: Kind
    name: str
    address: Address
    position: Position
    time_zone: str
    hours: OpeningHours
    capabilities: frozenset[Capability]
    capacity: int | None  # slots; a locker has a number, a store may have none (no limit)
    pickup_days: int | None  # None: the service's default
    active: bool = True

    def check(self) -> None:
        zone(self.time_zone)
        if self.kind is Kind.LOCKER and self.capacity is None:
            raise Refused("capacity", "a locker has a number of slots")
        if self.capacity is not None and not 1 <= self.capacity <= MAX_CAPACITY:
            raise Refused("capacity", f"between 1 and {MAX_CAPACITY}")
        if self.pickup_days is not None and not 1 <= self.pickup_days <= MAX_PICKUP_DAYS:
            raise Refused("pickup_days", f"between 1 and {MAX_PICKUP_DAYS}")

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.time_zone)


@dataclass(frozen=True, slots=True)
class Slots:
    """The point's slots after a change: what a slot event tells."""

    version: int
    occupied: int
    capacity: int | None

    @property
    def free(self) -> int | None:
        return None if self.capacity is None else self.capacity - self.occupied


@dataclass(slots=True, eq=False)
class Point:
    point_id: str
    details: PointDetails
    occupied: int = 0  # bookings holding a slot: booked, or a parcel waiting
    version: int = 0  # of the details
    slots_version: int = 0  # of the occupancy: one step per slot taken or freed

    @classmethod
    def create(cls, point_id: str, details: PointDetails) -> Point:
        details.check()
        return cls(point_id, details, version=1)

    def update(self, details: PointDetails) -> bool:
        """Replace the details; returns whether anything changed (a repeat is no new version)."""
        details.check()
        if details.capacity is not None and details.capacity < self.occupied:
            raise Conflict(
                "capacity", f"{self.occupied} slots are booked; free them before going below"
            )
        if details == self.details:
            return False
        self.details = details
        self.version += 1
        return True

    @property
    def free(self) -> int | None:
        capacity = self.details.capacity
        return None if capacity is None else capacity - self.occupied

    def slots(self) -> Slots:
        return Slots(self.slots_version, self.occupied, self.details.capacity)

    def take_slot(self) -> Slots:
        if not self.details.active:
            raise Conflict("point_id", f"{self.point_id} takes no new bookings")
        free = self.free
        if free is not None and free <= 0:
            assert self.details.capacity is not None
            raise NoFreeSlot(self.point_id, self.details.capacity, self.occupied)
        self.occupied += 1
        self.slots_version += 1
        return self.slots()

    def free_slot(self) -> Slots:
        if self.occupied <= 0:
            raise Conflict("point_id", f"{self.point_id} has no slot taken to free")
        self.occupied -= 1
        self.slots_version += 1
        return self.slots()

    def open_at(self, instant: datetime) -> bool:
        return is_open(self.details.hours, self.details.zone, instant)

    def pickup_window(self, default_days: int) -> timedelta:
        """How long a parcel waits here: whole 24-hour days from its arrival."""
        return timedelta(days=self.details.pickup_days or default_days)
