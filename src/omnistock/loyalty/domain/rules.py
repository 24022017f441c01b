"""The loyalty programme's rules, pure: how many points a kept value earns in a market, the
tiers and their multipliers, which account an order belongs to, and calendar months. Points and
money are integers; every division rounds down, in the programme's favour, the same way every
time."""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import datetime, timedelta

MAX_POINTS = 10**12
TIER_WINDOW_MONTHS = 12
"""A tier is earned by the points qualified in this many months back from now."""


class InvalidTransition(Exception):
    """A move the state's transition table does not allow."""

    def __init__(self, what: str, current: str, target: str) -> None:
        super().__init__(f"a {what} {current} cannot become {target}")
        self.current = current
        self.target = target


class InsufficientPoints(Exception):
    def __init__(self, wanted: int, available: int) -> None:
        super().__init__(f"{wanted} points wanted, {available} available")
        self.wanted = wanted
        self.available = available


class Refused(Exception):
    """A request the rules refuse; ``field`` names what to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_points(points: int) -> None:
    if not 1 <= points <= MAX_POINTS:
        raise Refused("points", f"must be between 1 and {MAX_POINTS}")


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    from_points: int  # qualifying points in the last 12 months that reach it
    multiplier_percent: int  # 100 earns the base points, 150 half as many again


DEFAULT_TIERS = (
    Tier("member", 0, 100),
    Tier("silver", 2_000, 125),
    Tier("gold", 10_000, 150),
)


@dataclass(frozen=True, slots=True)
class MarketRule:
    """How a market earns: ``points_per_unit`` points for each whole currency unit of
    ``minor_units_per_unit`` minor units (100 for PLN or EUR), times the tier's multiplier."""

    points_per_unit: int = 1
    minor_units_per_unit: int = 100
    tiers: tuple[Tier, ...] = DEFAULT_TIERS

    def __post_init__(self) -> None:
        if self.points_per_unit < 0 or self.minor_units_per_unit < 1:
            raise ValueError("points_per_unit >= 0 and minor_units_per_unit >= 1")
        if not self.tiers or self.tiers[0].from_points != 0:
            raise ValueError("the first tier starts at 0 points")
        thresholds = [tier.from_points for tier in self.tiers]
        if thresholds != sorted(set(thresholds)):
            raise ValueError("tiers go up strictly by from_points")
        if len({tier.name for tier in self.tiers}) != len(self.tiers):
            raise ValueError("tier names are unique")
        if any(tier.multiplier_percent < 0 for tier in self.tiers):
            raise ValueError("a tier's multiplier is not negative")

    def base_points(self, kept_value: int) -> int:
        """The points a value qualifies for, before any multiplier (what tiers count)."""
        return kept_value * self.points_per_unit // self.minor_units_per_unit

    def points(self, kept_value: int, multiplier_percent: int) -> int:
        """One division at the end: multiplying rounded base points again would lose points
        that the exact product keeps."""
        return (
            kept_value
            * self.points_per_unit
            * multiplier_percent
            // (self.minor_units_per_unit * 100)
        )

    @property
    def lowest(self) -> Tier:
        return self.tiers[0]

    def tier_for(self, qualifying_points: int) -> Tier:
        reached = self.lowest
        for tier in self.tiers:
            if qualifying_points >= tier.from_points:
                reached = tier
        return reached

    def tier_named(self, name: str) -> Tier:
        """The tier called ``name``; the lowest when the rules no longer know it."""
        return next((tier for tier in self.tiers if tier.name == name), self.lowest)


@dataclass(frozen=True, slots=True)
class Membership:
    """Which account an order belongs to: a customer's, in a brand group and a market."""

    customer_id: str
    brand_group: str
    market: str


@dataclass(frozen=True, slots=True)
class Policy:
    """The programme as configured: rules per market, brand groups, and how long points wait
    (the return window) and last (their validity)."""

    rules: dict[str, MarketRule] = field(default_factory=dict)
    default_rule: MarketRule = MarketRule()
    brand_groups: dict[str, str] = field(default_factory=dict)
    return_window: timedelta = timedelta(days=30)
    points_valid_months: int = 24

    def rule(self, market: str) -> MarketRule:
        return self.rules.get(market, self.default_rule)

    def membership(self, customer_id: str, channel_id: str) -> Membership:
        """A channel is ``brand-market``; a brand belongs to its group, or is one of its own."""
        brand, dash, market = channel_id.rpartition("-")
        if not dash or not brand or not market:
            raise Refused("channel_id", "a channel is named brand-market, e.g. brand-pl")
        return Membership(customer_id, self.brand_groups.get(brand, brand), market)


def add_months(instant: datetime, months: int) -> datetime:
    """The same day and time ``months`` later (or earlier, when negative); a day the target
    month lacks becomes its last day (31 January + 1 month = 28 or 29 February)."""
    index = instant.year * 12 + instant.month - 1 + months
    year, month = divmod(index, 12)
    day = min(instant.day, calendar.monthrange(year, month + 1)[1])
    return instant.replace(year=year, month=month + 1, day=day)
