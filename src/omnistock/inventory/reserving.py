"""Creating reservations, many per transaction.

Under a flash sale every checkout wants the same SKU, and one transaction per checkout would
queue them all on that SKU's lock: PostgreSQL's ceiling for one hot row is about 2,000
transactions per second here. ``ReservationBatcher`` lets concurrent requests share a
transaction instead (group commit): the SKU locks are taken once, the stock read once, each
request planned in arrival order against the stock the previous ones left, and everything
written and committed together. At low load a batch is one request and nothing waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
import structlog

from omnistock.contracts import inventory as events
from omnistock.inventory import domain, repository
from omnistock.inventory.domain import Pick, StockLevel
from omnistock.inventory.effects import commit_changes
from omnistock.inventory.repository import Change
from omnistock.platform import idempotency
from omnistock.platform.clock import Clock
from omnistock.platform.events import new_event_id
from omnistock.platform.outbox import OutboxMessage

log = structlog.get_logger(__name__)

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
    expires_at: datetime,
    picks: Sequence[Pick],
    shortfalls: Sequence[domain.Shortfall] = (),
) -> dict[str, Any]:
    return {
        "reservation_id": reservation_id,
        "channel_id": channel_id,
        "status": status,
        "expires_at": expires_at.isoformat(),
        "lines": [
            {"sku": p.sku, "location_id": p.location_id, "quantity": p.quantity} for p in picks
        ],
        "refused": [
            {"sku": s.sku, "requested": s.requested, "available": s.available} for s in shortfalls
        ],
    }


@dataclass(slots=True)
class _Batch:
    """What the planned reservations of one transaction write."""

    reservations: list[tuple[str, str, str, str | None, datetime, datetime]] = field(
        default_factory=list
    )
    lines: list[tuple[str, str, str, int]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    messages: list[OutboxMessage] = field(default_factory=list)


async def reserve_many(
    conn: asyncpg.Connection, clock: Clock, commands: Sequence[ReserveStock]
) -> list[Outcome]:
    """Plan and write the commands in order, in the caller's transaction; one outcome each."""
    requested = [domain.merge_lines(c.lines) for c in commands]
    await repository.lock_skus(conn, {sku for r in requested for sku in r})
    found = await repository.channels(conn, {c.channel_id for c in commands})
    channels = {c.channel_id: found.get(c.channel_id) for c in commands}
    locations = {s.location_id for ch in channels.values() if ch for s in ch.sources}
    levels = dict(
        await repository.levels(conn, sorted({s for r in requested for s in r}), sorted(locations))
    )
    now = clock.now()
    customer_held = await _customer_holds(conn, commands, channels, now - CUSTOMER_LIMIT_WINDOW)
    batch = _Batch()
    outcomes: list[Outcome] = []
    for command, wanted in zip(commands, requested, strict=True):
        outcomes.append(_plan_one(command, wanted, channels, levels, customer_held, now, batch))
    await _write(conn, clock, batch)
    return outcomes


def _plan_one(
    command: ReserveStock,
    wanted: dict[str, int],
    channels: dict[str, repository.Channel | None],
    levels: dict[tuple[str, str], StockLevel],
    customer_held: dict[tuple[str, str], dict[str, int]],
    now: datetime,
    batch: _Batch,
) -> Outcome:
    channel = channels[command.channel_id]
    if channel is None:
        return NotFound("channel", command.channel_id)
    held: dict[str, int] = {}
    if command.customer_id is None and channel.max_units_per_customer is not None:
        return CustomerIdRequired(command.channel_id)
    if command.customer_id is not None and channel.max_units_per_customer is not None:
        held = customer_held.setdefault((command.channel_id, command.customer_id), {})
        limit = domain.CustomerLimit(channel.max_units_per_customer, held)
        if excess := limit.excess(wanted):
            return CustomerLimitExceeded(excess, channel.max_units_per_customer)
    plan = domain.plan_reservation(
        wanted,
        channel.sources,
        levels,
        cap=channel.availability_cap,
        all_or_nothing=command.all_or_nothing,
        pickup_location=command.pickup_location,
    )
    if not plan.picks:
        return OutOfStock(plan.shortfalls)
    reservation_id = new_event_id()  # a UUIDv7: cheap, and kind to the primary key's index
    expires_at = now + min(command.ttl, MAX_TTL)
    for pick in plan.picks:
        key = (pick.sku, pick.location_id)
        level = levels.get(key) or StockLevel(*key)
        levels[key] = level._replace(reserved=level.reserved + pick.quantity)
        held[pick.sku] = held.get(pick.sku, 0) + pick.quantity
        batch.lines.append((reservation_id, pick.sku, pick.location_id, pick.quantity))
        batch.changes.append(Change(pick.sku, pick.location_id, reserved=pick.quantity))
    batch.reservations.append(
        (
            reservation_id,
            command.channel_id,
            command.client_id,
            command.customer_id,
            now,
            expires_at,
        )
    )
    reserved = events.StockReserved(
        reservation_id,
        command.channel_id,
        [events.Line(p.sku, p.location_id, p.quantity) for p in plan.picks],
        expires_at.isoformat(),
        command.customer_id,
    )
    batch.messages.append(OutboxMessage(reserved, aggregate_id=reservation_id, aggregate_version=1))
    return reservation_view(
        reservation_id, command.channel_id, "active", expires_at, plan.picks, plan.shortfalls
    )


async def _customer_holds(
    conn: asyncpg.Connection,
    commands: Sequence[ReserveStock],
    channels: dict[str, repository.Channel | None],
    since: datetime,
) -> dict[tuple[str, str], dict[str, int]]:
    limited = {
        (c.channel_id, c.customer_id)
        for c in commands
        if c.customer_id is not None
        and (ch := channels[c.channel_id])
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


async def _write(conn: asyncpg.Connection, clock: Clock, batch: _Batch) -> None:
    if not batch.reservations:
        return
    r = batch.reservations
    await conn.execute(
        """INSERT INTO reservations
               (reservation_id, channel_id, client_id, customer_id, status, created_at, expires_at)
           SELECT i, c, k, u, 'active', t, e
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                       $6::timestamptz[]) AS x(i, c, k, u, t, e)""",
        [x[0] for x in r],
        [x[1] for x in r],
        [x[2] for x in r],
        [x[3] for x in r],
        [x[4] for x in r],
        [x[5] for x in r],
    )
    lines = batch.lines
    await conn.execute(
        """INSERT INTO reservation_lines (reservation_id, sku, location_id, quantity)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[])""",
        [x[0] for x in lines],
        [x[1] for x in lines],
        [x[2] for x in lines],
        [x[3] for x in lines],
    )
    await commit_changes(conn, clock, batch.changes, batch.messages)


@dataclass(slots=True)
class _Pending:
    command: ReserveStock
    principal: str
    key: str
    fingerprint: str
    answer: asyncio.Future[idempotency.StoredAnswer]


class ReservationBatcher:
    """Runs concurrent reservation requests through shared transactions (group commit).

    Each request keeps its own Idempotency-Key semantics: its answer is stored in the batch's
    transaction; a refused request stores nothing. Should anything about a batch go wrong (a
    key racing with another replica, an unexpected error), its requests are run one by one,
    each in a transaction of its own, so no request is failed by another.
    """

    def __init__(
        self, pool: asyncpg.Pool, clock: Clock, workers: int = 4, max_batch: int = 256
    ) -> None:
        self._pool, self._clock = pool, clock
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._workers_count, self._max_batch = workers, max_batch
        self._workers: list[asyncio.Task[None]] = []
        self.batches = 0
        self.requests = 0

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"reservation-batcher-{n}")
            for n in range(self._workers_count)
        ]

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Finish what was submitted (graceful shutdown), then stop the workers."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout_s)
        for task in self._workers:
            task.cancel()
        while not self._queue.empty():  # what did not make it in time is refused, not left hanging
            pending = self._queue.get_nowait()
            if not pending.answer.done():
                pending.answer.set_exception(ServiceStopping())
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def submit(
        self, command: ReserveStock, principal: str, key: str, fingerprint: str
    ) -> idempotency.StoredAnswer:
        """The stored or new answer; raises a refusal (OutOfStock, ...) for this request."""
        answer: asyncio.Future[idempotency.StoredAnswer] = (
            asyncio.get_running_loop().create_future()
        )
        await self._queue.put(_Pending(command, principal, key, fingerprint, answer))
        return await answer

    async def _work(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._run_batch(batch)
            except Exception:
                log.warning(
                    "reservation batch failed, running its requests one by one",
                    size=len(batch),
                    exc_info=True,
                )
                for pending in batch:
                    if not pending.answer.done():
                        await self._run_alone(pending)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _run_batch(self, batch: list[_Pending]) -> None:
        unique: dict[tuple[str, str], _Pending] = {}
        repeats: list[_Pending] = []
        for pending in batch:
            slot = (pending.principal, pending.key)
            if slot in unique:
                repeats.append(pending)  # answered from the stored answer after this batch
            else:
                unique[slot] = pending
        async with self._pool.acquire() as conn, conn.transaction():
            stored = await idempotency.stored_answers(
                conn, [(p.principal, p.key, p.fingerprint) for p in unique.values()]
            )
            for slot, answer in stored.items():
                _settle(unique.pop(slot), answer)  # replays, answered without a reservation
            firsts = list(unique.values())
            outcomes = await reserve_many(conn, self._clock, [p.command for p in firsts])
            granted = [(p, o) for p, o in zip(firsts, outcomes, strict=True) if isinstance(o, dict)]
            if granted:
                inserted = await conn.fetch(
                    """INSERT INTO idempotency_keys
                           (principal, idempotency_key, request_hash, status_code, response_body)
                       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[],
                                            $5::bytea[])
                       ON CONFLICT DO NOTHING RETURNING idempotency_key""",
                    [p.principal for p, _ in granted],
                    [p.key for p, _ in granted],
                    [p.fingerprint for p, _ in granted],
                    [201] * len(granted),
                    [orjson.dumps(o) for _, o in granted],
                )
                if len(inserted) != len(granted):
                    raise _KeyRace()  # rolls the batch back; its requests run one by one
        self.batches += 1
        self.requests += len(firsts)
        for pending, outcome in zip(firsts, outcomes, strict=True):
            _settle(pending, outcome)
        for pending in repeats:
            await self._run_alone(pending)

    async def _run_alone(self, pending: _Pending) -> None:
        async def effect(conn: asyncpg.Connection) -> tuple[int, Any]:
            (outcome,) = await reserve_many(conn, self._clock, [pending.command])
            if isinstance(outcome, Exception):
                raise outcome
            return 201, outcome

        try:
            answer = await idempotency.run_once(
                self._pool, pending.principal, pending.key, pending.fingerprint, effect
            )
        except Exception as exc:
            if not pending.answer.done():
                pending.answer.set_exception(exc)
            return
        if not pending.answer.done():
            pending.answer.set_result(answer)


class ServiceStopping(Exception):
    """The service is shutting down: the client should retry (with the same key) elsewhere."""


class _KeyRace(Exception):
    """An Idempotency-Key of the batch was stored meanwhile by another transaction."""


def _settle(pending: _Pending, outcome: Outcome | idempotency.StoredAnswer | Exception) -> None:
    if pending.answer.done():
        return
    if isinstance(outcome, Exception):
        pending.answer.set_exception(outcome)
    elif isinstance(outcome, idempotency.StoredAnswer):
        pending.answer.set_result(outcome)
    else:
        pending.answer.set_result(idempotency.StoredAnswer(201, outcome, replayed=False))
