"""Positions in whole micro-degrees, distances in metres, and the box a search circle fits in.

A decimal degree with six places is a whole number of micro-degrees (about 0.11 m at the
equator), so positions are stored and compared exactly. Distances are estimates along a
sphere and may use floats: nothing is ever added up from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from omnistock.collection_points.domain.errors import Refused

MICRO = 1_000_000
EARTH_RADIUS_M = 6_371_008.8  # the mean radius: errors stay under 0.5 % anywhere
MAX_LATITUDE_E6 = 90 * MICRO
MAX_LONGITUDE_E6 = 180 * MICRO


@dataclass(frozen=True, slots=True)
class Position:
    latitude_e6: int
    longitude_e6: int

    def __post_init__(self) -> None:
        if not -MAX_LATITUDE_E6 <= self.latitude_e6 <= MAX_LATITUDE_E6:
            raise Refused("position.latitude", "between -90 and 90")
        if not -MAX_LONGITUDE_E6 <= self.longitude_e6 <= MAX_LONGITUDE_E6:
            raise Refused("position.longitude", "between -180 and 180")

    @classmethod
    def from_degrees(cls, latitude: Decimal, longitude: Decimal) -> Position:
        return cls(_micro(latitude, "position.latitude"), _micro(longitude, "position.longitude"))

    @property
    def latitude(self) -> str:
        return degrees_text(self.latitude_e6)

    @property
    def longitude(self) -> str:
        return degrees_text(self.longitude_e6)


def _micro(degrees: Decimal, field: str) -> int:
    if not degrees.is_finite():
        raise Refused(field, "a finite number")
    scaled = degrees.scaleb(6)
    if scaled != scaled.to_integral_value():
        raise Refused(field, "at most 6 decimal places")
    return int(scaled)


def degrees_text(micro_degrees: int) -> str:
    """Exact decimal text, always six places: 52229676 -> "52.229676", -1 -> "-0.000001"."""
    sign = "-" if micro_degrees < 0 else ""
    whole, fraction = divmod(abs(micro_degrees), MICRO)
    return f"{sign}{whole}.{fraction:06d}"


def distance_m(a: Position, b: Position) -> float:
    """The great-circle distance (haversine; exact to the metre where cosines would not be)."""
    lat_a, lat_b = math.radians(a.latitude_e6 / MICRO), math.radians(b.latitude_e6 / MICRO)
    d_lat = lat_b - lat_a
    d_lon = math.radians((b.longitude_e6 - a.longitude_e6) / MICRO)
    h = math.sin(d_lat / 2) ** 2 + math.cos(lat_a) * math.cos(lat_b) * math.sin(d_lon / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


@dataclass(frozen=True, slots=True)
class Box:
    """Latitudes and longitudes (micro-degrees) that hold a whole search circle. When the circle
    crosses the antimeridian the longitudes wrap: inside means ``>= west OR <= east``."""

    south: int
    north: int
    west: int
    east: int
    wraps: bool = False

    def contains(self, position: Position) -> bool:
        if not self.south <= position.latitude_e6 <= self.north:
            return False
        if self.wraps:
            return position.longitude_e6 >= self.west or position.longitude_e6 <= self.east
        return self.west <= position.longitude_e6 <= self.east


def bounding_box(center: Position, radius_m: float) -> Box:
    """The box an index can narrow a search to before distances are computed; a micro-degree
    of margin on each side absorbs rounding."""
    angle = radius_m / EARTH_RADIUS_M
    lat = center.latitude_e6 / MICRO
    lon = center.longitude_e6 / MICRO
    d_lat = math.degrees(angle)
    south, north = lat - d_lat, lat + d_lat
    if south <= -90 or north >= 90 or angle >= math.pi / 2:
        # A circle over a pole takes in every longitude.
        return Box(
            max(-MAX_LATITUDE_E6, _floor(south)),
            min(MAX_LATITUDE_E6, _ceil(north)),
            -MAX_LONGITUDE_E6,
            MAX_LONGITUDE_E6,
        )
    d_lon = math.degrees(math.asin(min(1.0, math.sin(angle) / math.cos(math.radians(lat)))))
    west, east = lon - d_lon, lon + d_lon
    wraps = west < -180 or east > 180
    if west < -180:
        west += 360
    if east > 180:
        east -= 360
    return Box(_floor(south), _ceil(north), _floor(west), _ceil(east), wraps)


def _floor(degrees: float) -> int:
    return math.floor(degrees * MICRO) - 1


def _ceil(degrees: float) -> int:
    return math.ceil(degrees * MICRO) + 1
