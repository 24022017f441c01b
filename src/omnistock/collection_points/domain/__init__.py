"""The rules of collection points, pure: no I/O, no framework, no clock reads (time comes in
as an argument)."""

from omnistock.collection_points.domain.bookings import (
    HOLDING_A_SLOT,
    TRANSITIONS,
    Booking,
    Change,
    Move,
    Status,
)
from omnistock.collection_points.domain.errors import (
    Conflict,
    InvalidTransition,
    NoFreeSlot,
    Refused,
)
from omnistock.collection_points.domain.geo import (
    Box,
    Position,
    bounding_box,
    degrees_text,
    distance_m,
)
from omnistock.collection_points.domain.hours import DAYS, Interval, OpeningHours, is_open, zone
from omnistock.collection_points.domain.points import (
    MAX_CAPACITY,
    MAX_PICKUP_DAYS,
    Address,
    Capability,
    Kind,
    Point,
    PointDetails,
    Slots,
)

__all__ = [
    "DAYS",
    "HOLDING_A_SLOT",
    "MAX_CAPACITY",
    "MAX_PICKUP_DAYS",
    "TRANSITIONS",
    "Address",
    "Booking",
    "Box",
    "Capability",
    "Change",
    "Conflict",
    "Interval",
    "InvalidTransition",
    "Kind",
    "Move",
    "NoFreeSlot",
    "OpeningHours",
    "Point",
    "PointDetails",
    "Position",
    "Refused",
    "Slots",
    "Status",
    "bounding_box",
    "degrees_text",
    "distance_m",
    "is_open",
    "zone",
]
