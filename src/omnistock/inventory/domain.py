"""Inventory rules, pure: no I/O, no clock reads (time comes in as an argument).

available(channel, sku) = min(cap, Σ over the channel's locations of
max(0, on_hand − reserved − allocated − safety_stock)).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from omnistock.contracts.identifiers import CHANNEL_PATTERN as CHANNEL_PATTERN
from omnistock.contracts.identifiers import SKU_PATTERN as SKU_PATTERN

LOCATION_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class InvalidTransition(Exception):
    pass


class ReservationStatus(StrEnum):
    ACTIVE = "active"
    COMMITTED = "committed"
    RELEASED = "released"
    EXPIRED = "expired"


# The only moves a reservation makes; anything else raises InvalidTransition.
RESERVATION_TRANSITIONS: dict[ReservationStatus, frozenset[ReservationStatus]] = {
    ReservationStatus.ACTIVE: frozenset(
        {ReservationStatus.COMMITTED, ReservationStatus.RELEASED, ReservationStatus.EXPIRED}
    ),
    ReservationStatus.COMMITTED: frozenset(),
    ReservationStatus.RELEASED: frozenset(),
    ReservationStatus.EXPIRED: frozenset(),
}


def transition(current: ReservationStatus, target: ReservationStatus) -> ReservationStatus:
    if target not in RESERVATION_TRANSITIONS[current]:
        raise InvalidTransition(f"a reservation cannot go from {current} to {target}")
    return target


class MovementReason(StrEnum):
    COUNT = "count"  # an absolute count from a WMS or till
    RECEIPT = "receipt"
    STORE_SALE = "store_sale"
    DAMAGE = "damage"
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"
    CORRECTION = "correction"
    SHIPMENT = "shipment"  # an allocation left the building
    RETURN = "return"  # a customer return, restocked as sellable
    IMPORT = "import"  # a bulk snapshot


DELTA_REASONS = frozenset(
    {
        MovementReason.RECEIPT,
        MovementReason.STORE_SALE,
        MovementReason.DAMAGE,
        MovementReason.TRANSFER_OUT,
        MovementReason.TRANSFER_IN,
        MovementReason.CORRECTION,
    }
)
"""Reasons a client may give for a delta; the others are the service's own."""


class StockLevel(NamedTuple):
    """Stock of one SKU at one location. (A named tuple: planning a batch of reservations
    builds many of them, and a tuple is several times cheaper to make than a dataclass.)"""

    sku: str
    location_id: str
    on_hand: int = 0
    reserved: int = 0
    allocated: int = 0

    def free(self, safety_stock: int = 0) -> int:
        return max(0, self.on_hand - self.reserved - self.allocated - safety_stock)

    @property
    def held(self) -> int:
        return self.reserved + self.allocated


@dataclass(frozen=True, slots=True)
class Source:
    """A location as one channel sees it."""

    location_id: str
    priority: int
    safety_stock: int = 0
    capabilities: frozenset[str] = frozenset({"ship"})


class Pick(NamedTuple):
    sku: str
    location_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Shortfall:
    sku: str
    requested: int
    available: int


@dataclass(frozen=True, slots=True)
class Plan:
    picks: tuple[Pick, ...]
    shortfalls: tuple[Shortfall, ...]

    @property
    def complete(self) -> bool:
        return not self.shortfalls


Levels = Mapping[tuple[str, str], StockLevel]


def merge_lines(lines: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Lines for the same SKU count together: two lines of 3 need 6 units, not 3 twice."""
    merged: dict[str, int] = {}
    for sku, quantity in lines:
        if quantity <= 0:
            raise ValueError(f"{sku}: quantity must be positive")
        merged[sku] = merged.get(sku, 0) + quantity
    return merged


def channel_available(sku: str, sources: Sequence[Source], levels: Levels, cap: int | None) -> int:
    total = sum(_free(levels, sku, s) for s in sources)
    return total if cap is None else min(cap, total)


def _free(levels: Levels, sku: str, source: Source) -> int:
    level = levels.get((sku, source.location_id))
    return 0 if level is None else level.free(source.safety_stock)


def _by_priority(source: Source) -> int:
    return source.priority


def plan_reservation(
    requested: Mapping[str, int],
    sources: Sequence[Source],
    levels: Levels,
    *,
    cap: int | None = None,
    all_or_nothing: bool = True,
    pickup_location: str | None = None,
) -> Plan:
    """Where to take each SKU from, by the channel's sourcing.

    One location that covers the whole request first (the pickup store, when there is one);
    else the fewest locations (greedy: the one covering most of what is left, ties by
    priority); a line may draw on several locations. With ``all_or_nothing`` any shortfall
    plans nothing; otherwise each line is taken whole or not at all.
    """
    ordered = sorted(sources, key=_by_priority)
    # Free units per (sku, location), worked out once: the shortfall check and the choice of
    # locations both need them, and a batch plans hundreds of reservations.
    free: dict[tuple[str, str], int] = {}
    shortfalls: list[Shortfall] = []
    for sku, quantity in requested.items():
        total = 0
        for source in ordered:
            units = free[(sku, source.location_id)] = _free(levels, sku, source)
            total += units
        available = total if cap is None else min(cap, total)
        if quantity > available:
            shortfalls.append(Shortfall(sku, quantity, available))
    wanted = dict(requested)
    if shortfalls:
        if all_or_nothing:
            return Plan((), tuple(shortfalls))
        for shortfall in shortfalls:
            del wanted[shortfall.sku]
    return Plan(tuple(_picks(wanted, ordered, free, pickup_location)), tuple(shortfalls))


def _picks(
    wanted: dict[str, int],
    ordered: list[Source],
    free: dict[tuple[str, str], int],
    pickup_location: str | None,
) -> list[Pick]:
    lines = sorted(wanted.items())
    preferred = [s for s in ordered if s.location_id == pickup_location]
    for source in [*preferred, *ordered] if preferred else ordered:
        location_id = source.location_id
        for sku, qty in lines:
            if free[(sku, location_id)] < qty:
                break
        else:
            return [Pick(sku, location_id, qty) for sku, qty in lines]
    remaining = dict(wanted)
    chosen: list[Source] = []
    while any(remaining.values()):
        best = max(
            (s for s in ordered if s not in chosen),
            key=lambda s: (
                sum(min(free[(sku, s.location_id)], qty) for sku, qty in remaining.items()),
                -s.priority,
            ),
        )
        chosen.append(best)
        for sku, qty in remaining.items():
            remaining[sku] = qty - min(free[(sku, best.location_id)], qty)
    picks = []
    for sku, qty in lines:
        for source in chosen:
            take = min(qty, free[(sku, source.location_id)])
            if take:
                picks.append(Pick(sku, source.location_id, take))
                qty -= take
    return picks


@dataclass(frozen=True, slots=True)
class Hold:
    """Units held at one location by one reservation or allocation."""

    hold_id: str
    quantity: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CountOutcome:
    delta: int
    released_reservations: tuple[str, ...] = ()
    released_allocations: tuple[str, ...] = ()

    @property
    def shortage(self) -> bool:
        return bool(self.released_reservations or self.released_allocations)


def apply_count(
    level: StockLevel,
    counted: int,
    reservations: Sequence[Hold] = (),
    allocations: Sequence[Hold] = (),
) -> CountOutcome:
    """An absolute count. If it is below what is held, holds are released, newest first and
    reservations before allocations (a checkout is easier to redo than an order), until the
    rest fits: stock never goes negative and never stays oversold."""
    if counted < 0:
        raise ValueError("a count cannot be negative")
    excess = level.held - counted
    released_reservations: list[str] = []
    released_allocations: list[str] = []
    for holds, released in (
        (reservations, released_reservations),
        (allocations, released_allocations),
    ):
        for hold in sorted(holds, key=lambda h: h.created_at, reverse=True):
            if excess <= 0:
                break
            released.append(hold.hold_id)
            excess -= hold.quantity
    if excess > 0:
        raise ValueError("holds at the location do not add up to its reserved and allocated units")
    return CountOutcome(
        counted - level.on_hand, tuple(released_reservations), tuple(released_allocations)
    )


def is_expired(expires_at: datetime, now: datetime) -> bool:
    return expires_at <= now


@dataclass(slots=True)
class CustomerLimit:
    """Units of one SKU a customer may hold in a channel (flash sales)."""

    max_units: int | None
    held: dict[str, int] = field(default_factory=dict)

    def excess(self, requested: Mapping[str, int]) -> dict[str, int]:
        if self.max_units is None:
            return {}
        return {
            sku: self.held.get(sku, 0) + qty - self.max_units
            for sku, qty in requested.items()
            if self.held.get(sku, 0) + qty > self.max_units
        }
