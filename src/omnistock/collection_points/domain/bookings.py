"""A booking: one slot of a point held for one order, and the life of its parcel there.

``booked`` holds the slot until the parcel ``arrived`` (a pickup code is issued and the time to
collect starts); the customer ``collected`` it, or it ``expired`` uncollected and goes back to
the sender; a booking the order no longer needs is ``released`` before its parcel arrives. The
three endings free the slot. Every move is checked against ``TRANSITIONS``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from omnistock.collection_points.domain.errors import InvalidTransition, Refused
from omnistock.collection_points.domain.points import Point, Slots


class Status(StrEnum):
    BOOKED = "booked"
    ARRIVED = "arrived"
    COLLECTED = "collected"
    EXPIRED = "expired"
    RELEASED = "released"


class Move(StrEnum):
    ARRIVE = "arrive"
    COLLECT = "collect"
    EXPIRE = "expire"
    RELEASE = "release"


S = Status
TRANSITIONS: dict[Status, dict[Move, Status]] = {
    S.BOOKED: {Move.ARRIVE: S.ARRIVED, Move.RELEASE: S.RELEASED},
    S.ARRIVED: {Move.COLLECT: S.COLLECTED, Move.EXPIRE: S.EXPIRED},
    S.COLLECTED: {},
    S.EXPIRED: {},
    S.RELEASED: {},
}
"""Every move a booking may make; anything else raises InvalidTransition."""

HOLDING_A_SLOT = frozenset({S.BOOKED, S.ARRIVED})


@dataclass(frozen=True, slots=True)
class Change:
    """One version of a booking: the status it reached, and the point's slots if it took or
    freed one."""

    status: Status
    version: int
    at: datetime
    slots: Slots | None = None
    pickup_code: str | None = None  # issued by this change (arrived)


@dataclass(slots=True, eq=False)
class Booking:
    booking_id: str
    point_id: str
    order_id: str
    customer_id: str
    booked_at: datetime
    status: Status = Status.BOOKED
    version: int = 0
    pickup_code: str | None = None  # kept only while the parcel waits
    arrived_at: datetime | None = None
    collect_by: datetime | None = None
    ended_at: datetime | None = None
    changes: list[Change] = field(default_factory=list)  # recorded since loaded

    @classmethod
    def book(
        cls, point: Point, booking_id: str, order_id: str, customer_id: str, now: datetime
    ) -> Booking:
        """Take one of the point's slots for the order (NoFreeSlot when none is left)."""
        slots = point.take_slot()
        booking = cls(booking_id, point.point_id, order_id, customer_id, now)
        booking._record(Status.BOOKED, now, slots)
        return booking

    def arrive(self, pickup_code: str, now: datetime, window: timedelta) -> None:
        """The parcel is in the locker or at the store's desk; the customer has ``window`` to
        collect it with ``pickup_code``."""
        self._move(Move.ARRIVE)
        self.pickup_code = pickup_code
        self.arrived_at = now
        self.collect_by = now + window
        self._record(Status.ARRIVED, now, pickup_code=pickup_code)

    def collect(self, point: Point, pickup_code: str, now: datetime) -> None:
        self._allowed(Move.COLLECT)
        assert self.pickup_code is not None
        if not secrets.compare_digest(self.pickup_code.encode(), pickup_code.encode()):
            raise Refused("pickup_code", "does not match")
        self._end(Move.COLLECT, point, now)

    def is_due_to_expire(self, now: datetime) -> bool:
        return self.status is S.ARRIVED and self.collect_by is not None and now >= self.collect_by

    def expire(self, point: Point, now: datetime) -> None:
        """Not collected in time: the slot is freed and the parcel goes back to the sender."""
        self._allowed(Move.EXPIRE)
        if not self.is_due_to_expire(now):
            raise InvalidTransition(
                self.status, Move.EXPIRE, f"collectable until {self.collect_by}"
            )
        self._end(Move.EXPIRE, point, now)

    def release(self, point: Point, now: datetime) -> None:
        """The order no longer needs the slot (cancelled, or delivered elsewhere)."""
        self._end(Move.RELEASE, point, now)

    @property
    def holds_slot(self) -> bool:
        return self.status in HOLDING_A_SLOT

    def _end(self, move: Move, point: Point, now: datetime) -> None:
        if point.point_id != self.point_id:
            raise ValueError("a booking frees a slot of its own point")
        target = self._allowed(move)
        slots = point.free_slot()
        self.status = target
        self.pickup_code = None  # no use once the parcel is gone, and nothing to leak
        self.ended_at = now
        self._record(target, now, slots)

    def _allowed(self, move: Move) -> Status:
        target = TRANSITIONS[self.status].get(move)
        if target is None:
            raise InvalidTransition(self.status, move)
        return target

    def _move(self, move: Move) -> Status:
        self.status = self._allowed(move)
        return self.status

    def _record(
        self,
        status: Status,
        now: datetime,
        slots: Slots | None = None,
        pickup_code: str | None = None,
    ) -> None:
        self.version += 1
        self.changes.append(Change(status, self.version, now, slots, pickup_code))
