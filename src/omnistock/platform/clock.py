"""Time in UTC through an injectable clock, so that tests move time instead of sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime) -> None:
        self._now = ensure_utc(start)

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        if delta < timedelta(0):
            raise ValueError("a clock does not go backwards")
        self._now += delta

    def set(self, instant: datetime) -> None:
        self._now = ensure_utc(instant)


def ensure_utc(instant: datetime) -> datetime:
    """Convert an aware datetime to UTC; a naive one is an error, never a guess."""
    if instant.tzinfo is UTC:
        return instant
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError("naive datetime: times must carry a timezone")
    return instant.astimezone(UTC)
