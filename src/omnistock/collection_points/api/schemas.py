"""Request bodies and identifiers of the collection-points API."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, field_validator

from omnistock.collection_points.domain import (
    DAYS,
    MAX_CAPACITY,
    MAX_PICKUP_DAYS,
    Address,
    Capability,
    Kind,
    OpeningHours,
    PointDetails,
    Position,
)
from omnistock.collection_points.domain.hours import MAX_EXCEPTIONS, MAX_INTERVALS_PER_DAY

REFERENCE = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
MARKET = r"^[A-Z]{2}$"
TIME = r"^([01]\d|2[0-3]):[0-5]\d$|^24:00$"
PICKUP_CODE = r"^[A-Za-z0-9]{4,32}$"
PointPath = Annotated[
    str, Path(pattern=REFERENCE, description="a point id (orders' store or locker id)")
]
BookingPath = Annotated[str, Path(pattern=UUID_PATTERN, description="a booking id")]
Latitude = Annotated[
    Decimal,
    Field(ge=-90, le=90, decimal_places=6, description="decimal degrees, at most 6 places"),
]
Longitude = Annotated[
    Decimal,
    Field(ge=-180, le=180, decimal_places=6, description="decimal degrees, at most 6 places"),
]


class Closed(BaseModel):
    """Unknown fields are refused: a misspelt day would otherwise read as closed all week."""

    model_config = ConfigDict(extra="forbid")


class IntervalIn(Closed):
    opens: str = Field(pattern=TIME, examples=["09:00"])
    closes: str = Field(pattern=TIME, examples=["17:00"], description="24:00: until midnight")


Hours = Annotated[list[IntervalIn], Field(max_length=MAX_INTERVALS_PER_DAY)]


class WeeklyIn(Closed):
    """A day left out is closed. Hours past midnight continue the next day from 00:00."""

    mon: Hours = Field(default_factory=list)
    tue: Hours = Field(default_factory=list)
    wed: Hours = Field(default_factory=list)
    thu: Hours = Field(default_factory=list)
    fri: Hours = Field(default_factory=list)
    sat: Hours = Field(default_factory=list)
    sun: Hours = Field(default_factory=list)


class ExceptionIn(Closed):
    date: dt.date = Field(description="a local date of the point")
    hours: Hours = Field(description="replace the week's hours on that date; empty: closed")


class OpeningHoursIn(Closed):
    weekly: WeeklyIn
    exceptions: list[ExceptionIn] = Field(default_factory=list, max_length=MAX_EXCEPTIONS)

    def parsed(self) -> OpeningHours:
        weekly = {day: [(i.opens, i.closes) for i in getattr(self.weekly, day)] for day in DAYS}
        exceptions = [(e.date, [(i.opens, i.closes) for i in e.hours]) for e in self.exceptions]
        return OpeningHours.parse(weekly, exceptions)


class AddressIn(Closed):
    street: str = Field(min_length=1, max_length=200)
    postcode: str = Field(min_length=1, max_length=20)
    city: str = Field(min_length=1, max_length=100)


class PositionIn(Closed):
    """Exact decimals (a JSON number or a string), stored as whole micro-degrees."""

    latitude: Latitude
    longitude: Longitude


class PointIn(Closed):
    kind: Kind
    market: str = Field(pattern=MARKET, description="ISO 3166-1 alpha-2, e.g. PL")
    name: str = Field(min_length=1, max_length=200)
    address: AddressIn
    position: PositionIn
    time_zone: str = Field(
        min_length=1, max_length=64, description="IANA time zone of the hours, e.g. Europe/Warsaw"
    )
    opening_hours: OpeningHoursIn
    capabilities: list[Capability] = Field(default_factory=list, max_length=len(Capability))
    capacity: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=MAX_CAPACITY,
        description="slots; required for a locker, none for a store without a limit",
    )
    pickup_days: int | None = Field(
        default=None,
        strict=True,
        ge=1,
        le=MAX_PICKUP_DAYS,
        description="days a parcel waits to be collected; none: the service's default",
    )
    active: bool = Field(default=True, description="false: found by id only, no new bookings")

    @field_validator("capabilities")
    @classmethod
    def _once_each(cls, value: list[Capability]) -> list[Capability]:
        if len(set(value)) != len(value):
            raise ValueError("each capability at most once")
        return value

    def details(self) -> PointDetails:
        """The domain's details; what pydantic cannot check (the zone, the hours) raises
        Refused naming the field."""
        details = PointDetails(
            market=self.market,
            kind=self.kind,
            name=self.name,
            address=Address(self.address.street, self.address.postcode, self.address.city),
            position=Position.from_degrees(self.position.latitude, self.position.longitude),
            time_zone=self.time_zone,
            hours=self.opening_hours.parsed(),
            capabilities=frozenset(self.capabilities),
            capacity=self.capacity,
            pickup_days=self.pickup_days,
            active=self.active,
        )
        details.check()
        return details


class BookingIn(BaseModel):
    order_id: str = Field(pattern=REFERENCE)
    customer_id: str = Field(pattern=REFERENCE, description="who collects: sees the code")


class ArriveIn(BaseModel):
    pickup_code: str | None = Field(
        default=None,
        pattern=PICKUP_CODE,
        description="the locker network's own code; left out, one is made",
    )


class CollectIn(BaseModel):
    pickup_code: str = Field(pattern=PICKUP_CODE, description="the code the customer showed")
