"""A search for points: a market, optionally a position to sort by distance from, filters, and
a page. Pages follow one another by a cursor (the last point's distance and id) rather than
an offset, so a point booked or added meanwhile neither repeats nor skips one."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from omnistock.collection_points.domain.errors import Refused
from omnistock.collection_points.domain.geo import Box, Position, bounding_box
from omnistock.collection_points.domain.points import Capability, Kind

DEFAULT_RADIUS_M = 10_000
MAX_RADIUS_M = 50_000
DEFAULT_LIMIT = 20
MAX_LIMIT = 50


@dataclass(frozen=True, slots=True)
class After:
    """Where the previous page ended: (distance in whole metres, point id), or the id alone."""

    distance_m: int | None
    point_id: str

    def cursor(self) -> str:
        text = f"{'' if self.distance_m is None else self.distance_m}|{self.point_id}"
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def from_cursor(cls, cursor: str, near: bool) -> After:
        refused = Refused("query.cursor", "not a cursor of this search")
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            distance, _, point_id = base64.urlsafe_b64decode(padded).decode().partition("|")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise refused from None
        if not point_id or (distance == "") == near:
            raise refused
        if not near:
            return cls(None, point_id)
        if not distance.isdigit():
            raise refused
        return cls(int(distance), point_id)


@dataclass(frozen=True, slots=True)
class Search:
    market: str
    near: Position | None = None
    radius_m: int = DEFAULT_RADIUS_M
    kind: Kind | None = None
    capability: Capability | None = None
    with_free_slots: bool = False
    limit: int = DEFAULT_LIMIT
    after: After | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.radius_m <= MAX_RADIUS_M:
            raise Refused("query.radius_m", f"between 1 and {MAX_RADIUS_M}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise Refused("query.limit", f"between 1 and {MAX_LIMIT}")

    def box(self) -> Box | None:
        return None if self.near is None else bounding_box(self.near, self.radius_m)
