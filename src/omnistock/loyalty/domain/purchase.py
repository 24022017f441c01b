"""An order as the loyalty programme sees it: its lines, what came back, and when and how much
it earns. Points are earned once the order is completed and its return window has passed, for
the lines kept; goods that come back after that take their points back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from omnistock.loyalty.domain.rules import InvalidTransition, MarketRule, Tier, add_months


class PurchaseStatus(StrEnum):
    OPEN = "open"  # placed, not completed yet
    SCHEDULED = "scheduled"  # completed: earns once the return window has passed
    EARNED = "earned"  # earned (nothing, if everything came back)
    CANCELLED = "cancelled"


P = PurchaseStatus

PURCHASE_TRANSITIONS: dict[PurchaseStatus, frozenset[PurchaseStatus]] = {
    P.OPEN: frozenset({P.SCHEDULED, P.CANCELLED}),
    P.SCHEDULED: frozenset({P.EARNED}),
    P.EARNED: frozenset(),
    P.CANCELLED: frozenset(),
}
"""Every move a purchase may make; anything else raises InvalidTransition."""


@dataclass(slots=True)
class Line:
    sku: str
    quantity: int
    unit_price: int  # minor units
    returned: int = 0  # units sent back from a trial or returned afterwards


@dataclass(frozen=True, slots=True)
class Earning:
    points: int
    qualifying: int  # before the multiplier: what tiers count
    kept_value: int
    multiplier_percent: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Reversal:
    """What goods that came back after the earning take back."""

    points: int
    qualifying: int


@dataclass(slots=True, eq=False)
class Purchase:
    order_id: str
    member_id: str
    currency: str
    market: str
    lines: list[Line] = field(default_factory=list)
    status: PurchaseStatus = P.OPEN
    order_version: int = 0  # the order's version last applied: older events are stale
    points_to_redeem: int = 0  # what the order asked to pay with points
    completed_at: datetime | None = None
    earn_at: datetime | None = None
    points: int = 0
    qualifying: int = 0
    multiplier_percent: int = 0
    points_reversed: int = 0  # taken back from the balance
    points_unrecovered: int = 0  # to take back, but spent already
    qualifying_reversed: int = 0
    earned_at: datetime | None = None
    expires_at: datetime | None = None

    def kept_value(self) -> int:
        return sum((line.quantity - line.returned) * line.unit_price for line in self.lines)

    def take_back(self, items: list[tuple[str, int]]) -> int:
        """Units of ``items`` (sku, quantity) came back; returns how many were on the order
        and not back already (the orders service never returns more than was kept, but a
        return of something else must not make the kept value grow)."""
        taken = 0
        for sku, quantity in items:
            left = quantity
            for line in self.lines:
                if line.sku != sku or left <= 0:
                    continue
                units = min(left, line.quantity - line.returned)
                line.returned += units
                left -= units
                taken += units
        return taken

    def complete(self, at: datetime, return_window: timedelta) -> None:
        self._move(P.SCHEDULED)
        self.completed_at = at
        self.earn_at = at + return_window

    def cancel(self) -> None:
        self._move(P.CANCELLED)

    def is_due(self, now: datetime) -> bool:
        return self.status is P.SCHEDULED and self.earn_at is not None and now >= self.earn_at

    def earn(self, rule: MarketRule, tier: Tier, now: datetime, valid_months: int) -> Earning:
        """The points the kept lines earn at ``tier``'s multiplier, valid ``valid_months``."""
        self._move(P.EARNED)
        kept = self.kept_value()
        self.points = rule.points(kept, tier.multiplier_percent)
        self.qualifying = rule.base_points(kept)
        self.multiplier_percent = tier.multiplier_percent
        self.earned_at = now
        self.expires_at = add_months(now, valid_months)
        return Earning(self.points, self.qualifying, kept, self.multiplier_percent, self.expires_at)

    def reversal_due(self, rule: MarketRule) -> Reversal:
        """After an earning, what the goods that came back since take back: the earning is
        worked out again for what is kept now, at the multiplier it was earned at."""
        if self.status is not P.EARNED:
            return Reversal(0, 0)
        kept = self.kept_value()
        still = rule.points(kept, self.multiplier_percent)
        points = self.points - self.points_reversed - self.points_unrecovered - still
        qualifying = self.qualifying - self.qualifying_reversed - rule.base_points(kept)
        return Reversal(max(points, 0), max(qualifying, 0))

    def reversed(self, reversal: Reversal, taken: int) -> None:
        """``taken`` of ``reversal.points`` left the balance; the rest had been spent."""
        self.points_reversed += taken
        self.points_unrecovered += reversal.points - taken
        self.qualifying_reversed += reversal.qualifying

    @property
    def net_points(self) -> int:
        """What this earning still adds to the balance's history, for expiry."""
        return self.points - self.points_reversed

    def _move(self, target: PurchaseStatus) -> None:
        if target not in PURCHASE_TRANSITIONS[self.status]:
            raise InvalidTransition("purchase", self.status.value, target.value)
        self.status = target
