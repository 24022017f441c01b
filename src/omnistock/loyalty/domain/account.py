"""The member account: a balance that never goes below zero, points held for orders, and every
change recorded as one version (a ledger entry or a tier move) for the caller to save and
publish. Holds move by one table; a repeat of the move a hold already made changes nothing."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from omnistock.loyalty.domain.rules import (
    InsufficientPoints,
    InvalidTransition,
    check_points,
)


class Kind(StrEnum):
    """What a version of an account is: one of the ledger's kinds, or a tier move."""

    EARN = "earn"
    HOLD = "hold"
    COMMIT = "commit"
    RELEASE = "release"
    EXPIRE = "expire"
    REVERSE = "reverse"
    TIER = "tier"


LEDGER_KINDS = frozenset(Kind) - {Kind.TIER}


class HoldStatus(StrEnum):
    HELD = "held"
    COMMITTED = "committed"  # spent for good
    RELEASED = "released"  # back in the balance


HOLD_TRANSITIONS: dict[HoldStatus, frozenset[HoldStatus]] = {
    HoldStatus.HELD: frozenset({HoldStatus.COMMITTED, HoldStatus.RELEASED}),
    HoldStatus.COMMITTED: frozenset(),
    HoldStatus.RELEASED: frozenset(),
}
"""Every move a hold may make; anything else raises InvalidTransition."""


def hold_move(current: HoldStatus, target: HoldStatus) -> bool:
    """Whether the hold moves: False for a repeat (it is there already, as a retried saga
    step expects); raises for a move the table does not allow."""
    if current is target:
        return False
    if target not in HOLD_TRANSITIONS[current]:
        raise InvalidTransition("hold", current.value, target.value)
    return True


@dataclass(slots=True)
class Hold:
    """Points held for one order. A hold with no member is a release that came first: the
    order is closed for holds."""

    order_id: str
    member_id: str | None
    points: int
    status: HoldStatus = HoldStatus.HELD

    def move(self, target: HoldStatus) -> bool:
        """Whether it moved; False for a repeat of the move it made already."""
        moved = hold_move(self.status, target)
        self.status = target
        return moved


@dataclass(frozen=True, slots=True)
class Earned:
    """What an earning is for, carried to its ledger entry and event."""

    kept_value: int
    currency: str
    tier: str
    multiplier_percent: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Change:
    """One version of an account: the points moved (never negative; the signed moves are
    ``balance_change`` and ``held_change``) and, once recorded, the account's version and
    figures after it."""

    kind: Kind
    at: datetime
    points: int = 0
    balance_change: int = 0
    held_change: int = 0
    version: int = 0
    balance: int = 0
    held: int = 0
    order_id: str | None = None
    return_id: str | None = None
    unrecovered: int = 0
    earned: Earned | None = None
    tier: str | None = None
    previous_tier: str | None = None
    qualifying_points: int = 0


@dataclass(slots=True, eq=False)
class Account:
    member_id: str
    customer_id: str
    brand_group: str
    market: str
    tier: str
    version: int = 0
    balance: int = 0  # what the member may spend now
    held: int = 0  # set aside for orders in progress
    earned: int = 0
    spent: int = 0
    reversed: int = 0
    expired: int = 0
    changes: list[Change] = field(default_factory=list)  # recorded since loaded

    def invariants_hold(self) -> bool:
        """The figures the database also checks: nothing negative, and every point the
        member ever earned is in the balance, held, spent, reversed or expired."""
        figures = (self.balance, self.held, self.earned, self.spent, self.reversed, self.expired)
        return min(figures) >= 0 and self.balance + self.held == (
            self.earned - self.spent - self.reversed - self.expired
        )

    def hold(self, order_id: str, points: int, now: datetime) -> None:
        check_points(points)
        if points > self.balance:
            raise InsufficientPoints(points, self.balance)
        self._record(Change(Kind.HOLD, now, points, -points, points, order_id=order_id))

    def commit(self, order_id: str, points: int, now: datetime) -> None:
        self._check_held(points)
        self.spent += points
        self._record(Change(Kind.COMMIT, now, points, 0, -points, order_id=order_id))

    def release(self, order_id: str, points: int, now: datetime) -> None:
        self._check_held(points)
        self._record(Change(Kind.RELEASE, now, points, points, -points, order_id=order_id))

    def earn(self, order_id: str, points: int, earned: Earned, now: datetime) -> None:
        check_points(points)
        self.earned += points
        self._record(Change(Kind.EARN, now, points, points, order_id=order_id, earned=earned))

    def reverse(self, order_id: str, return_id: str, points: int, now: datetime) -> int:
        """Take back ``points`` of an order's earning; what was spent already cannot be, so
        at most the balance is. Returns how many were taken back."""
        check_points(points)
        taken = min(points, self.balance)
        self.reversed += taken
        self._record(
            Change(
                Kind.REVERSE,
                now,
                taken,
                -taken,
                order_id=order_id,
                return_id=return_id,
                unrecovered=points - taken,
            )
        )
        return taken

    def expire_due(self, expiring_net: int, now: datetime) -> int:
        """Expire what is left unspent of the points whose validity has ended.

        ``expiring_net`` is every point earned (net of reversals) that has reached its
        expiry. Points leave oldest first: whatever was spent, is held or has expired
        already came out of those first, so only the rest is still unspent."""
        due = min(self.balance, expiring_net - self.spent - self.held - self.expired)
        if due <= 0:
            return 0
        self.expired += due
        self._record(Change(Kind.EXPIRE, now, due, -due))
        return due

    def change_tier(self, tier: str, qualifying_points: int, now: datetime) -> bool:
        if tier == self.tier:
            return False
        previous, self.tier = self.tier, tier
        self._record(
            Change(
                Kind.TIER,
                now,
                tier=tier,
                previous_tier=previous,
                qualifying_points=qualifying_points,
            )
        )
        return True

    def _check_held(self, points: int) -> None:
        check_points(points)
        if points > self.held:
            # A hold's points are in ``held`` until it moves: anything else is a bug.
            raise RuntimeError(f"{points} points to move, {self.held} held")

    def _record(self, change: Change) -> None:
        self.balance += change.balance_change
        self.held += change.held_change
        self.version += 1
        self.changes.append(
            replace(change, version=self.version, balance=self.balance, held=self.held)
        )
