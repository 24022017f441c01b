"""The order's rules, pure: its states and the one table of moves between them, the price
check at intake, and when a saga step is tried again. No I/O, no clock reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class OrderStatus(StrEnum):
    PLACED = "placed"
    ALLOCATED = "allocated"  # the reservation became the order's allocations
    AUTHORIZED = "authorized"  # the payment is authorized (deferred ones: approved)
    CONFIRMED = "confirmed"
    SHIPPED = "shipped"
    READY_FOR_PICKUP = "ready_for_pickup"
    DELIVERED = "delivered"
    COLLECTED = "collected"
    IN_TRIAL = "in_trial"  # try before you buy: the customer decides what to keep
    COMPLETED = "completed"
    CANCELLING = "cancelling"  # compensation under way: a semantic lock on the order
    CANCELLED = "cancelled"


S = OrderStatus

TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.PLACED: frozenset({S.ALLOCATED, S.CANCELLING}),
    S.ALLOCATED: frozenset({S.AUTHORIZED, S.CANCELLING}),
    S.AUTHORIZED: frozenset({S.CONFIRMED, S.CANCELLING}),
    S.CONFIRMED: frozenset({S.SHIPPED, S.CANCELLING}),
    # A parcel for a store or locker ships there first, then waits to be collected.
    S.SHIPPED: frozenset({S.DELIVERED, S.READY_FOR_PICKUP}),
    # A parcel nobody collects goes back to the sender: nothing was charged, the order ends.
    S.READY_FOR_PICKUP: frozenset({S.COLLECTED, S.CANCELLING}),
    S.DELIVERED: frozenset({S.IN_TRIAL, S.COMPLETED}),
    S.COLLECTED: frozenset({S.IN_TRIAL, S.COMPLETED}),
    S.IN_TRIAL: frozenset({S.COMPLETED}),
    S.COMPLETED: frozenset(),
    S.CANCELLING: frozenset({S.CANCELLED}),
    S.CANCELLED: frozenset(),
}
"""Every move an order may make; anything else raises InvalidTransition."""

CANCELLABLE = frozenset(
    s for s, targets in TRANSITIONS.items() if S.CANCELLING in targets and s != S.READY_FOR_PICKUP
)
"""Before shipment: what a customer or staff may still cancel."""

FINAL = frozenset(s for s, targets in TRANSITIONS.items() if not targets)


class InvalidTransition(Exception):
    def __init__(self, current: OrderStatus, target: OrderStatus) -> None:
        super().__init__(f"an order {current} cannot become {target}")
        self.current = current
        self.target = target


def transition(current: OrderStatus, target: OrderStatus) -> OrderStatus:
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(current, target)
    return target


class CancelReason(StrEnum):
    """Why an order ended cancelled: machine-readable, on the order and in its events."""

    BY_CUSTOMER = "cancelled_by_customer"
    BY_STAFF = "cancelled_by_staff"
    PAYMENT_DECLINED = "payment_declined"
    PAYMENT_REFUSED = "payment_refused"
    POINTS_REFUSED = "loyalty_points_refused"
    RESERVATION_NOT_COMMITTABLE = "reservation_not_committable"
    STEP_FAILED = "step_failed"
    CONFIRMATION_TIMED_OUT = "confirmation_timed_out"
    NOT_COLLECTED = "not_collected"


class Decision(StrEnum):
    """What a try-before-you-buy customer does with a line during the trial."""

    KEEP = "keep"
    RETURN = "return"


AFTER_DELIVERY = frozenset({S.DELIVERED, S.COLLECTED})
RETURNABLE = frozenset({S.COMPLETED})
"""A return (RMA) is for a completed order; during a trial the customer decides per line."""


def market_of(channel_id: str) -> str:
    """A channel is brand × market, named ``brand-market``."""
    return channel_id.rsplit("-", 1)[-1]


@dataclass(frozen=True, slots=True)
class Windows:
    """How long a customer has: to decide in a trial (per market), to return after completion."""

    trial_days: int
    trial_days_by_market: dict[str, int]
    return_within: timedelta

    def trial(self, channel_id: str) -> timedelta:
        market = market_of(channel_id)
        return timedelta(days=self.trial_days_by_market.get(market, self.trial_days))


@dataclass(frozen=True, slots=True)
class LineValue:
    sku: str
    quantity: int
    unit_price: int
    decision: Decision | None


def kept_value(lines: list[LineValue]) -> int:
    """What the customer pays for: every line not sent back from a trial. A line with no
    answer when the window closes is kept."""
    return sum(x.quantity * x.unit_price for x in lines if x.decision is not Decision.RETURN)


# -- the price check at intake --


@dataclass(frozen=True, slots=True)
class PriceDifference:
    line: int
    sku: str
    seen: int
    current: int | None  # None: the SKU has no price in the channel now


def price_differences(
    seen: list[tuple[str, int]], current: dict[str, int | None], tolerance_bp: int
) -> list[PriceDifference]:
    """Lines (sku, unit price the customer saw) whose current price differs by more than
    ``tolerance_bp`` basis points of the current price, or that have no price at all."""
    found = []
    for number, (sku, price) in enumerate(seen):
        now = current.get(sku)
        # Integer arithmetic: |seen - now| * 10000 > now * tolerance, never a float.
        if now is None or abs(price - now) * 10_000 > now * tolerance_bp:
            found.append(PriceDifference(number, sku, price, now))
    return found


# -- retries --


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    first_delay: timedelta
    longest_delay: timedelta

    def delay(self, attempts: int) -> timedelta:
        """The wait after the ``attempts``-th failed try: doubling, capped."""
        doubled: timedelta = self.first_delay * (2 ** min(max(attempts - 1, 0), 30))
        return min(doubled, self.longest_delay)

    def gives_up(self, attempts: int) -> bool:
        return attempts >= self.max_attempts


def is_overdue(confirm_by: datetime, now: datetime) -> bool:
    return now >= confirm_by
