"""Reservations planned and written together, in the caller's transaction: the SKU locks
taken once, the stock read once, each command planned in arrival order against the stock the
previous ones left, and everything written in one set-based statement, the events included."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from omnistock.contracts import inventory as events
from omnistock.inventory import domain, repository
from omnistock.inventory.domain import Pick, StockLevel
from omnistock.inventory.effects import SOURCE
from omnistock.inventory.reserving import store
from omnistock.inventory.reserving.store import (
    AnswerKey,
    Answers,
    BatchState,
    Figures,
    Holds,
    Lines,
    Reservations,
)
from omnistock.platform import db, idempotency
from omnistock.platform.clock import Clock
from omnistock.platform.events import new_event_ids
from omnistock.platform.outbox import OutboxMessage, outbox_rows
from omnistock.platform.problems import Problem

DEFAULT_TTL = timedelta(minutes=15)
MAX_TTL = timedelta(hours=2)


class NotFound(Exception):
    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"{what} {key!r} not found")
        self.what, self.key = what, key


class OutOfStock(Exception):
    def __init__(self, shortfalls: Sequence[domain.Shortfall]) -> None:
        super().__init__(
            ", ".join(
                f"{s.sku}: {s.requested} requested, {s.available} available" for s in shortfalls
            )
        )
        self.shortfalls = tuple(shortfalls)


class CustomerLimitExceeded(Exception):
    def __init__(self, excess: dict[str, int], limit: int) -> None:
        super().__init__(f"at most {limit} units per SKU and customer")
        self.excess, self.limit = excess, limit


class CustomerIdRequired(Exception):
    """A channel that limits units per customer cannot serve anonymous reservations: leaving
    the customer out would be the way around the limit."""

    def __init__(self, channel_id: str) -> None:
        super().__init__(f"channel {channel_id} limits units per customer: name the customer")


CUSTOMER_LIMIT_WINDOW = timedelta(hours=24)
"""Units a customer reserved or ordered within this window count against the limit."""

REFUSALS = (OutOfStock, NotFound, CustomerLimitExceeded, CustomerIdRequired)


@dataclass(frozen=True, slots=True)
class ReserveStock:
    """The command: hold these lines for a checkout."""

    channel_id: str
    lines: tuple[tuple[str, int], ...]
    client_id: str
    customer_id: str | None = None
    ttl: timedelta = DEFAULT_TTL
    all_or_nothing: bool = True
    pickup_location: str | None = None


Outcome = dict[str, Any] | OutOfStock | NotFound | CustomerLimitExceeded | CustomerIdRequired


def reservation_view(
    reservation_id: str,
    channel_id: str,
    status: str,
    expires_at: str,
    picks: Sequence[Pick],
    shortfalls: Sequence[domain.Shortfall] = (),
) -> dict[str, Any]:
    return {
        "reservation_id": reservation_id,
        "channel_id": channel_id,
        "status": status,
        "expires_at": expires_at,
        "lines": [
            {"sku": p.sku, "location_id": p.location_id, "quantity": p.quantity} for p in picks
        ],
        "refused": [
            {"sku": s.sku, "requested": s.requested, "available": s.available} for s in shortfalls
        ],
    }


Answer = Outcome | idempotency.StoredAnswer | Problem
"""What a request gets from a batch: its outcome, or the answer stored under its key before."""


@dataclass(slots=True)
class _Batch:
    """The commands of one transaction, planned in arrival order against the stock the previous
    ones left, and the rows and events that the granted ones write."""

    state: BatchState
    now: datetime
    reservation_ids: Iterator[str]
    reservations: Reservations = field(default_factory=lambda: Reservations([], [], [], [], []))
    lines: Lines = field(default_factory=lambda: Lines([], [], [], []))
    messages: list[OutboxMessage] = field(default_factory=list)
    expiry_texts: dict[datetime, str] = field(default_factory=dict)  # isoformat(), once each

    def plan(self, command: ReserveStock, wanted: dict[str, int]) -> Outcome:
        channel = self.state.channels.get(command.channel_id)
        if channel is None:
            return NotFound("channel", command.channel_id)
        held: dict[str, int] = {}
        if channel.max_units_per_customer is not None:
            if command.customer_id is None:
                return CustomerIdRequired(command.channel_id)
            held = self.state.customer_held.setdefault(
                (command.channel_id, command.customer_id), {}
            )
            limit = domain.CustomerLimit(channel.max_units_per_customer, held)
            if excess := limit.excess(wanted):
                return CustomerLimitExceeded(excess, channel.max_units_per_customer)
        plan = domain.plan_reservation(
            wanted,
            channel.sources,
            self.state.levels,
            cap=channel.availability_cap,
            all_or_nothing=command.all_or_nothing,
            pickup_location=command.pickup_location,
        )
        if not plan.picks:
            return OutOfStock(plan.shortfalls)
        reservation_id = next(self.reservation_ids)
        expires_at = self.now + min(command.ttl, MAX_TTL)
        if (expiry := self.expiry_texts.get(expires_at)) is None:
            expiry = self.expiry_texts[expires_at] = expires_at.isoformat()
        self._hold(reservation_id, plan.picks, held)
        reservations = self.reservations
        reservations.ids.append(reservation_id)
        reservations.channel_ids.append(command.channel_id)
        reservations.client_ids.append(command.client_id)
        reservations.customer_ids.append(command.customer_id)
        reservations.expiries.append(expires_at)
        reserved = events.StockReserved(
            reservation_id,
            command.channel_id,
            [events.Line(*pick) for pick in plan.picks],
            expiry,
            command.customer_id,
        )
        self.messages.append(
            OutboxMessage(reserved, aggregate_id=reservation_id, aggregate_version=1)
        )
        return reservation_view(
            reservation_id, command.channel_id, "active", expiry, plan.picks, plan.shortfalls
        )

    def _hold(self, reservation_id: str, picks: Sequence[Pick], held: dict[str, int]) -> None:
        """The picks leave the stock that the next commands of the batch are planned against."""
        levels = self.state.levels
        lines = self.lines
        for sku, location_id, quantity in picks:
            level = levels[(sku, location_id)]  # a pick only comes from a stock row
            levels[(sku, location_id)] = StockLevel(
                sku, location_id, level.on_hand, level.reserved + quantity, level.allocated
            )
            held[sku] = held.get(sku, 0) + quantity
            lines.reservation_ids.append(reservation_id)
            lines.skus.append(sku)
            lines.location_ids.append(location_id)
            lines.quantities.append(quantity)

    def holds(self) -> Holds:
        """Units held per stock row, all lines of the batch together."""
        units: dict[tuple[str, str], int] = {}
        lines = self.lines
        for sku, location_id, quantity in zip(
            lines.skus, lines.location_ids, lines.quantities, strict=True
        ):
            units[(sku, location_id)] = units.get((sku, location_id), 0) + quantity
        holds = Holds([], [], [])
        for (sku, location_id), quantity in units.items():
            holds.skus.append(sku)
            holds.location_ids.append(location_id)
            holds.quantities.append(quantity)
        return holds

    def figures(self) -> Figures:
        """available(channel, sku) after the batch, where it moved, for every channel that sells
        from a location the batch took stock from: by the domain's rule, from the stock read
        under the SKU locks as the batch left it. (Recomputing it in SQL from the rows just
        written, joins and an aggregate per channel and SKU, took the batch's longest
        statement.) A figure never published before starts at version 1."""
        fed_by: dict[str, list[repository.Channel]] = {}
        for channel in self.state.channels.values():
            for source in channel.sources:
                fed_by.setdefault(source.location_id, []).append(channel)
        affected: dict[tuple[str, str], repository.Channel] = {}
        lines = self.lines
        for sku, location_id in set(zip(lines.skus, lines.location_ids, strict=True)):
            for channel in fed_by[location_id]:
                affected[(channel.channel_id, sku)] = channel
        figures = Figures([], [], [], [])
        levels, published = self.state.levels, self.state.figures
        for (channel_id, sku), channel in sorted(affected.items()):
            available = domain.channel_available(
                sku, channel.sources, levels, channel.availability_cap
            )
            before = published.get((channel_id, sku))
            if before is not None and before[0] == available:
                continue
            figures.channel_ids.append(channel_id)
            figures.skus.append(sku)
            figures.available.append(available)
            figures.versions.append(1 if before is None else before[1] + 1)
        return figures


async def reserve_many(
    conn: asyncpg.Connection,
    clock: Clock,
    commands: Sequence[ReserveStock],
    answer_keys: Sequence[AnswerKey] = (),
) -> list[Answer]:
    """Plan and write the commands in order, in the caller's transaction; one answer each.

    With ``answer_keys`` (one per command, distinct), a command whose key has an answer stored
    already gets that answer (or the problem of a reused key) and is not planned; each granted
    command's answer is stored under its key in the same statement as its reservation. A key
    stored meanwhile by another transaction raises ``asyncpg.UniqueViolationError``."""
    if not commands:
        return []
    # The read probes rows one by one by key and the write joins on primary keys: one plan
    # serves every batch. Planning them afresh for each batch, as PostgreSQL chose to, cost
    # more than running them for the small batches of ordinary traffic (a 1-line batch: 1.7 ms
    # planned each time, 1.2 ms with the plans kept).
    await db.keep_plans(conn)
    requested = [domain.merge_lines(c.lines) for c in commands]
    now = clock.now()
    state = await store.read_state(
        conn,
        sorted({sku for r in requested for sku in r}),
        sorted({c.channel_id for c in commands}),
        sorted({(c.channel_id, c.customer_id) for c in commands if c.customer_id is not None}),
        now - CUSTOMER_LIMIT_WINDOW,
        answer_keys,
    )
    batch = _Batch(state, now, iter(new_event_ids(len(commands))))
    answers: list[Answer] = []
    stored = Answers([], [], [], [])
    keys: Sequence[AnswerKey | None] = answer_keys or [None] * len(commands)
    for command, wanted, key in zip(commands, requested, keys, strict=True):
        if key is not None and (found := state.answers.get((key.principal, key.key))):
            answers.append(found)
            continue
        outcome = batch.plan(command, wanted)
        answers.append(outcome)
        if key is not None and isinstance(outcome, dict):
            stored.principals.append(key.principal)
            stored.keys.append(key.key)
            stored.fingerprints.append(key.fingerprint)
            stored.bodies.append(orjson.dumps(outcome))
    if batch.lines.skus:
        figures = batch.figures()
        messages = [*batch.messages, *_availability_messages(figures)]
        await store.write(
            conn,
            now,
            batch.reservations,
            batch.lines,
            stored,
            batch.holds(),
            figures,
            outbox_rows(SOURCE, messages, clock),
        )
    return answers


def _availability_messages(figures: Figures) -> list[OutboxMessage]:
    return [
        OutboxMessage(
            events.AvailabilityChanged(channel_id, sku, available, version),
            aggregate_id=f"{channel_id}:{sku}",
            aggregate_version=version,
        )
        for channel_id, sku, available, version in zip(*figures, strict=True)
    ]
