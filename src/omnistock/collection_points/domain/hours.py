"""Opening hours in a point's own local time: the same hours every week, and dated exceptions
(a holiday closed, a Saturday open longer) that replace the week's hours on their date.

Hours are wall-clock times in the point's IANA time zone, so a store that opens at 09:00 opens
at 09:00 on both sides of a daylight-saving change. Whether a point is open is asked with an
instant (UTC, from the caller's clock) and answered in the point's zone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from omnistock.collection_points.domain.errors import Refused

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # in date.weekday() order
DAY_MINUTES = 24 * 60
MAX_INTERVALS_PER_DAY = 6
MAX_EXCEPTIONS = 400  # a year of dated hours and then some
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")
# Names the tz database ships that depend on the machine rather than naming a place.
_NOT_PLACES = frozenset({"localtime", "Factory"})


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_PLACES


def zone(name: str, field_name: str = "time_zone") -> ZoneInfo:
    """The IANA zone ``name`` (e.g. ``Europe/Warsaw``); anything else is refused."""
    if name not in _known_zones():
        raise Refused(field_name, f"{name!r} is not an IANA time zone such as Europe/Warsaw")
    return ZoneInfo(name)


def minutes(text: str, field_name: str) -> int:
    """ "09:30" -> 570; "24:00" (the end of a day) -> 1440."""
    if not _TIME.match(text):
        raise Refused(field_name, "a time of day as HH:MM, 00:00 to 24:00")
    hours, mins = text.split(":")
    return int(hours) * 60 + int(mins)


def clock_text(total: int) -> str:
    return f"{total // 60:02d}:{total % 60:02d}"


@dataclass(frozen=True, slots=True, order=True)
class Interval:
    """Open from ``opens`` up to, not including, ``closes`` (minutes after local midnight).
    Hours past midnight are two intervals: 22:00-24:00 and 00:00-02:00 the next day."""

    opens: int
    closes: int

    def contains(self, minute: int) -> bool:
        return self.opens <= minute < self.closes

    def as_json(self) -> dict[str, str]:
        return {"opens": clock_text(self.opens), "closes": clock_text(self.closes)}


Day = tuple[Interval, ...]


@dataclass(frozen=True, slots=True)
class OpeningHours:
    weekly: tuple[Day, Day, Day, Day, Day, Day, Day]
    exceptions: Mapping[date, Day] = field(default_factory=dict)

    @classmethod
    def parse(
        cls,
        weekly: Mapping[str, Sequence[tuple[str, str]]],
        exceptions: Sequence[tuple[date, Sequence[tuple[str, str]]]] = (),
        prefix: str = "opening_hours",
    ) -> OpeningHours:
        """From (opens, closes) texts; a day left out of ``weekly`` is closed."""
        unknown = sorted(set(weekly) - set(DAYS))
        if unknown:
            raise Refused(f"{prefix}.weekly.{unknown[0]}", f"not a day; use {', '.join(DAYS)}")
        days = tuple(_day(weekly.get(name, ()), f"{prefix}.weekly.{name}") for name in DAYS)
        if len(exceptions) > MAX_EXCEPTIONS:
            raise Refused(f"{prefix}.exceptions", f"at most {MAX_EXCEPTIONS}")
        dated: dict[date, Day] = {}
        for number, (on, hours) in enumerate(exceptions):
            where = f"{prefix}.exceptions[{number}]"
            if on in dated:
                raise Refused(f"{where}.date", f"{on.isoformat()} is listed twice")
            dated[on] = _day(hours, f"{where}.hours")
        return cls(days, dated)  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OpeningHours:
        weekly = {
            day: [(i["opens"], i["closes"]) for i in hours] for day, hours in data["weekly"].items()
        }
        exceptions = [
            (date.fromisoformat(e["date"]), [(i["opens"], i["closes"]) for i in e["hours"]])
            for e in data.get("exceptions", [])
        ]
        return cls.parse(weekly, exceptions)

    def as_json(self) -> dict[str, Any]:
        return {
            "weekly": {
                name: [i.as_json() for i in day]
                for name, day in zip(DAYS, self.weekly, strict=True)
            },
            "exceptions": [
                {"date": on.isoformat(), "hours": [i.as_json() for i in day]}
                for on, day in sorted(self.exceptions.items())
            ],
        }

    def on(self, day: date) -> Day:
        """The hours of a local date: its exception if it has one, else its weekday's."""
        dated = self.exceptions.get(day)
        return dated if dated is not None else self.weekly[day.weekday()]

    def is_open_at(self, local: datetime) -> bool:
        """At a local wall-clock time (seconds count: 16:59:59 is before a 17:00 close)."""
        minute = local.hour * 60 + local.minute
        return any(interval.contains(minute) for interval in self.on(local.date()))


def is_open(hours: OpeningHours, time_zone: ZoneInfo, instant: datetime) -> bool:
    """Whether a point with ``hours`` in ``time_zone`` is open at ``instant`` (aware)."""
    if instant.tzinfo is None:
        raise ValueError("naive datetime: an instant must carry its time zone")
    return hours.is_open_at(instant.astimezone(time_zone))


def _day(hours: Sequence[tuple[str, str]], where: str) -> Day:
    if len(hours) > MAX_INTERVALS_PER_DAY:
        raise Refused(where, f"at most {MAX_INTERVALS_PER_DAY} intervals a day")
    intervals = []
    for number, (opens, closes) in enumerate(hours):
        interval = Interval(
            minutes(opens, f"{where}[{number}].opens"),
            minutes(closes, f"{where}[{number}].closes"),
        )
        if interval.opens == DAY_MINUTES:
            raise Refused(f"{where}[{number}].opens", "a day opens at 23:59 at the latest")
        if interval.closes <= interval.opens:
            raise Refused(
                f"{where}[{number}].closes",
                "after opens; hours past midnight continue as 00:00-HH:MM the next day",
            )
        intervals.append((interval, number))
    intervals.sort()
    for (before, _), (after, number) in pairwise(intervals):
        if after.opens < before.closes:
            raise Refused(f"{where}[{number}]", "overlaps another interval of the day")
    return tuple(interval for interval, _ in intervals)
