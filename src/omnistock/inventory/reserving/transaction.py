"""Reservations planned and written together, in the caller's transaction: the SKU locks
taken once, the stock read once, each command planned in arrival order against the stock the
previous ones left, and everything written in a few set-based statements."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import asyncpg
import orjson

from omnistock.contracts import inventory as events
from omnistock.inventory import domain, repository
from omnistock.inventory.domain import Pick, StockLevel
from omnistock.inventory.effects import commit_changes
from omnistock.inventory.repository import Change
from omnistock.platform.clock import Clock
from omnistock.platform.events import new_event_ids
from omnistock.platform.outbox import OutboxMessage

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


@dataclass(slots=True)
class _Batch:
    """The commands of one transaction, planned in arrival order against the stock the previous
    ones left, and the rows and events that the granted ones write."""

    channels: dict[str, repository.Channel]
    levels: dict[tuple[str, str], StockLevel]
    customer_held: dict[tuple[str, str], dict[str, int]]
    now: datetime
    reservation_ids: Iterator[str]
    # Column by column, as the INSERT takes them.
    reservations: tuple[list[str], list[str], list[str], list[str | None], list[datetime]] = field(
        default_factory=lambda: ([], [], [], [], [])
    )
    lines: tuple[list[str], list[str], list[str], list[int]] = field(
        default_factory=lambda: ([], [], [], [])
    )
    changes: list[Change] = field(default_factory=list)
    messages: list[OutboxMessage] = field(default_factory=list)
    expiry_texts: dict[datetime, str] = field(default_factory=dict)  # isoformat(), once each

    def plan(self, command: ReserveStock, wanted: dict[str, int]) -> Outcome:
        channel = self.channels.get(command.channel_id)
        if channel is None:
            return NotFound("channel", command.channel_id)
        held: dict[str, int] = {}
        if channel.max_units_per_customer is not None:
            if command.customer_id is None:
                return CustomerIdRequired(command.channel_id)
            held = self.customer_held.setdefault((command.channel_id, command.customer_id), {})
            limit = domain.CustomerLimit(channel.max_units_per_customer, held)
            if excess := limit.excess(wanted):
                return CustomerLimitExceeded(excess, channel.max_units_per_customer)
        plan = domain.plan_reservation(
            wanted,
            channel.sources,
            self.levels,
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
        ids, channel_ids, client_ids, customer_ids, expiries = self.reservations
        ids.append(reservation_id)
        channel_ids.append(command.channel_id)
        client_ids.append(command.client_id)
        customer_ids.append(command.customer_id)
        expiries.append(expires_at)
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
        levels = self.levels
        ids, skus, locations, quantities = self.lines
        for sku, location_id, quantity in picks:
            level = levels[(sku, location_id)]  # a pick only comes from a stock row
            levels[(sku, location_id)] = StockLevel(
                sku, location_id, level.on_hand, level.reserved + quantity, level.allocated
            )
            held[sku] = held.get(sku, 0) + quantity
            ids.append(reservation_id)
            skus.append(sku)
            locations.append(location_id)
            quantities.append(quantity)
            self.changes.append(Change(sku, location_id, reserved=quantity))


class AnswerKey(NamedTuple):
    """Where a request's answer is kept: its Idempotency-Key and the fingerprint of its body."""

    principal: str
    key: str
    fingerprint: str


async def reserve_many(
    conn: asyncpg.Connection,
    clock: Clock,
    commands: Sequence[ReserveStock],
    answer_keys: Sequence[AnswerKey] | None = None,
) -> list[Outcome]:
    """Plan and write the commands in order, in the caller's transaction; one outcome each.

    With ``answer_keys`` (one per command), each granted command's answer is stored under its
    key in the same statement as its reservation; a key stored meanwhile by another transaction
    raises ``asyncpg.UniqueViolationError``."""
    if not commands:
        return []
    requested = [domain.merge_lines(c.lines) for c in commands]
    skus = sorted({sku for r in requested for sku in r})
    await repository.lock_skus(conn, skus)
    channels = await repository.channels(conn, {c.channel_id for c in commands})
    locations = sorted({s.location_id for ch in channels.values() for s in ch.sources})
    levels = await repository.levels(conn, skus, locations)
    now = clock.now()
    customer_held = await _customer_holds(conn, commands, channels, now - CUSTOMER_LIMIT_WINDOW)
    batch = _Batch(channels, levels, customer_held, now, iter(new_event_ids(len(commands))))
    outcomes = [batch.plan(c, wanted) for c, wanted in zip(commands, requested, strict=True)]
    answers: list[tuple[AnswerKey, bytes]] = []
    if answer_keys is not None:
        answers = [
            (key, orjson.dumps(outcome))
            for key, outcome in zip(answer_keys, outcomes, strict=True)
            if isinstance(outcome, dict)
        ]
    await _write(conn, clock, batch, answers)
    return outcomes


async def _customer_holds(
    conn: asyncpg.Connection,
    commands: Sequence[ReserveStock],
    channels: dict[str, repository.Channel],
    since: datetime,
) -> dict[tuple[str, str], dict[str, int]]:
    limited = {
        (c.channel_id, c.customer_id)
        for c in commands
        if c.customer_id is not None
        and (ch := channels.get(c.channel_id))
        and ch.max_units_per_customer
    }
    if not limited:
        return {}
    rows = await conn.fetch(
        """SELECT r.channel_id, r.customer_id, l.sku, sum(l.quantity)::int AS held
           FROM reservations r JOIN reservation_lines l USING (reservation_id)
           JOIN unnest($1::text[], $2::text[]) AS w(channel_id, customer_id)
                ON w.channel_id = r.channel_id AND w.customer_id = r.customer_id
           WHERE r.status IN ('active', 'committed') AND r.created_at > $3
           GROUP BY r.channel_id, r.customer_id, l.sku""",
        [c for c, _ in limited],
        [k for _, k in limited],
        since,
    )
    held: dict[tuple[str, str], dict[str, int]] = {}
    for row in rows:
        held.setdefault((row["channel_id"], row["customer_id"]), {})[row["sku"]] = row["held"]
    return held


# The reservations, their lines and the stored answers in one round trip. (The lines' foreign
# key is checked at the end of the statement, when the reservations are in.)
_INSERT_RESERVATIONS = """
    WITH reservation AS (
        INSERT INTO reservations
            (reservation_id, channel_id, client_id, customer_id, status, created_at, expires_at)
        SELECT i, c, k, u, 'active', $1, e
        FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
             AS x(i, c, k, u, e)),
    line AS (
        INSERT INTO reservation_lines (reservation_id, sku, location_id, quantity)
        SELECT * FROM unnest($7::uuid[], $8::text[], $9::text[], $10::int[]))
    INSERT INTO idempotency_keys
        (principal, idempotency_key, request_hash, status_code, response_body)
    SELECT p, k, h, 201, b
    FROM unnest($11::text[], $12::text[], $13::text[], $14::bytea[]) AS a(p, k, h, b)"""


async def _write(
    conn: asyncpg.Connection, clock: Clock, batch: _Batch, answers: list[tuple[AnswerKey, bytes]]
) -> None:
    if not batch.changes:
        return
    await conn.execute(
        _INSERT_RESERVATIONS,
        batch.now,
        *batch.reservations,
        *batch.lines,
        [key.principal for key, _ in answers],
        [key.key for key, _ in answers],
        [key.fingerprint for key, _ in answers],
        [body for _, body in answers],
    )
    await commit_changes(conn, clock, batch.changes, batch.messages)
