"""Inventory invariants under random interleavings of its use cases, over the real database.

Each hypothesis example builds a small network of its own (3 locations, 2 channels with
overlapping sourcing, safety stock, an availability cap and a per-customer limit, 3 SKUs), then
runs 20–40 operations, each in its own transaction as the API would, with a manual clock and
the sweeper's ``expire_due``. After every operation the stock rows, the ledger, the holds and
the published availability must agree; an operation the domain refuses must change nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from omnistock.inventory import domain, fulfilment, repository, reserving, service
from omnistock.platform import db
from omnistock.platform.clock import ManualClock
from omnistock.platform.settings import Settings
from tests.integration.conftest import create_service_schema, drop_schema

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 29, 12, tzinfo=UTC)
# What a use case may refuse with; a refusal must change nothing.
REFUSALS = (*reserving.REFUSALS, domain.InvalidTransition, asyncpg.CheckViolationError)
SKUS, LOCATIONS, CUSTOMERS = 3, 3, 2


@pytest.fixture(scope="module")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    schema = await create_service_schema(settings, "inventory", "omnistock.inventory")
    pool = await db.create_pool(settings.database_url, schema, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()
        await drop_schema(settings, schema)


# The operations. SKUs, locations, channels and customers are indexes into the example's own
# network; reservations, orders and allocations are picked among those made so far.


@dataclass(frozen=True)
class Count:
    sku: int
    location: int
    on_hand: int
    sequence: int  # drawn small: some counts arrive stale


@dataclass(frozen=True)
class Adjust:
    sku: int
    location: int
    quantity: int
    reason: str


@dataclass(frozen=True)
class Reserve:
    channel: int
    lines: tuple[tuple[int, int], ...]
    customer: int | None
    ttl_s: int
    per_line: bool
    pickup: int | None


@dataclass(frozen=True)
class Advance:
    seconds: int


@dataclass(frozen=True)
class Expire:
    pass


@dataclass(frozen=True)
class Extend:
    pick: int
    ttl_s: int


@dataclass(frozen=True)
class Release:
    pick: int


@dataclass(frozen=True)
class Commit:
    pick: int
    redelivered: bool  # the same order again: the first answer, nothing more


@dataclass(frozen=True)
class Ship:
    pick: int


@dataclass(frozen=True)
class Cancel:
    pick: int


@dataclass(frozen=True)
class Return:
    sku: int
    location: int
    quantity: int
    sellable: bool


sku_index = st.integers(0, SKUS - 1)
location_index = st.integers(0, LOCATIONS - 1)
pick = st.integers(0, 1000)
reserve = st.builds(
    Reserve,
    st.integers(0, 1),
    st.lists(st.tuples(sku_index, st.integers(1, 4)), min_size=1, max_size=3).map(tuple),
    st.none() | st.integers(0, CUSTOMERS - 1),
    st.integers(30, 900),
    st.booleans(),
    st.none() | location_index,
)
operations = st.one_of(
    st.builds(Count, sku_index, location_index, st.integers(0, 12), st.integers(0, 30)),
    st.builds(
        Adjust,
        sku_index,
        location_index,
        st.integers(-6, 9).filter(bool),
        st.sampled_from(sorted(domain.DELTA_REASONS)),
    ),
    reserve,
    reserve,  # twice: reservations are what the other operations work on
    st.builds(Advance, st.integers(0, 600)),
    st.just(Expire()),
    st.builds(Extend, pick, st.integers(30, 900)),
    st.builds(Release, pick),
    st.builds(Commit, pick, st.booleans()),
    st.builds(Ship, pick),
    st.builds(Cancel, pick),
    st.builds(Return, sku_index, location_index, st.integers(1, 3), st.booleans()),
)
initial_stock = st.lists(st.integers(0, 8), min_size=SKUS * LOCATIONS, max_size=SKUS * LOCATIONS)


@dataclass
class World:
    """One example's network and what its operations have made so far."""

    skus: list[str]
    locations: list[str]
    channels: list[str]
    customers: list[str]
    clock: ManualClock = field(default_factory=lambda: ManualClock(T0))
    reservations: list[str] = field(default_factory=list)
    committed: dict[str, str] = field(default_factory=dict)  # reservation -> order
    orders: list[str] = field(default_factory=list)
    allocations: list[tuple[str, str]] = field(default_factory=list)  # (order, allocation)
    shipped: set[str] = field(default_factory=set)
    order_of_last_commit: str = ""
    repeated: bool = False  # the operation about to run repeats one that succeeded

    @classmethod
    def fresh(cls) -> World:
        tag = uuid.uuid4().hex[:8]
        return cls(
            skus=[f"SKU-{tag}-{n}" for n in range(SKUS)],
            locations=[f"loc-{tag}-{n}" for n in range(LOCATIONS)],
            channels=[f"web-{tag}", f"app-{tag}"],
            customers=[f"customer-{tag}-{n}" for n in range(CUSTOMERS)],
        )

    @staticmethod
    def chosen(items: list[Any], index: int, missing: Any) -> Any:
        return items[index % len(items)] if items else missing


async def build_network(pool: asyncpg.Pool, world: World, stock: list[int]) -> None:
    """Locations, channels, and some stock received at every location."""
    async with pool.acquire() as conn, conn.transaction():
        for n, location in enumerate(world.locations):
            kind = "warehouse" if n == 0 else "store"
            await service.put_location(conn, location, kind, "PL", ["ship"], location)
        web, app = world.channels
        warehouse, store, outlet = world.locations
        # Both channels sell from the store, each with its own safety stock there.
        await service.put_channel(
            conn,
            world.clock,
            web,
            "brand",
            "PL",
            [domain.Source(warehouse, 1, safety_stock=1), domain.Source(store, 2)],
            max_units_per_customer=4,
        )
        await service.put_channel(
            conn,
            world.clock,
            app,
            "brand",
            "PL",
            [domain.Source(store, 1, safety_stock=2), domain.Source(outlet, 2)],
            availability_cap=6,
        )
    items = [(sku, location) for sku in world.skus for location in world.locations]
    for (sku, location), quantity in zip(items, stock, strict=True):
        if quantity:
            async with pool.acquire() as conn, conn.transaction():
                await service.adjust_stock(
                    conn,
                    world.clock,
                    sku=sku,
                    location_id=location,
                    quantity=quantity,
                    reason="receipt",
                )


def operation_runner(world: World, op: Any) -> Callable[[asyncpg.Connection], Awaitable[Any]]:
    """The use case an operation stands for, as a function of the transaction's connection."""
    clock = world.clock
    missing = str(uuid.uuid4())
    world.repeated = False
    match op:
        case Expire():
            return lambda conn: service.expire_due(conn, clock)
        case Count():
            return lambda conn: service.count_stock(
                conn,
                clock,
                source="wms",
                sequence=op.sequence,
                sku=world.skus[op.sku],
                location_id=world.locations[op.location],
                on_hand=op.on_hand,
            )
        case Adjust():
            return lambda conn: service.adjust_stock(
                conn,
                clock,
                sku=world.skus[op.sku],
                location_id=world.locations[op.location],
                quantity=op.quantity,
                reason=op.reason,
                reference=f"adj-{uuid.uuid4().hex[:8]}",
            )
        case Reserve():
            return lambda conn: service.reserve(
                conn,
                clock,
                channel_id=world.channels[op.channel],
                lines=[(world.skus[sku], quantity) for sku, quantity in op.lines],
                client_id="storefront",
                customer_id=None if op.customer is None else world.customers[op.customer],
                ttl=timedelta(seconds=op.ttl_s),
                all_or_nothing=not op.per_line,
                pickup_location=None if op.pickup is None else world.locations[op.pickup],
            )
        case Extend():
            reservation = world.chosen(world.reservations, op.pick, missing)
            return lambda conn: service.extend(
                conn, clock, reservation, timedelta(seconds=op.ttl_s)
            )
        case Release():
            reservation = world.chosen(world.reservations, op.pick, missing)
            return lambda conn: service.release(conn, clock, reservation)
        case Commit():
            reservation = world.chosen(world.reservations, op.pick, missing)
            again = world.committed.get(reservation) if op.redelivered else None
            world.repeated = again is not None
            world.order_of_last_commit = again or f"order-{uuid.uuid4().hex[:8]}"
            order = world.order_of_last_commit
            return lambda conn: fulfilment.commit(conn, clock, reservation, order)
        case Ship():
            order, allocation = world.chosen(world.allocations, op.pick, ("no-order", missing))
            world.repeated = allocation in world.shipped
            return lambda conn: fulfilment.ship(
                conn, clock, order, allocation, f"parcel-{uuid.uuid4().hex[:8]}"
            )
        case Cancel():
            order = world.chosen(world.orders, op.pick, "no-order")
            return lambda conn: fulfilment.cancel_allocations(conn, clock, order, "cancelled")
        case Return():
            return lambda conn: fulfilment.restock_return(
                conn,
                clock,
                sku=world.skus[op.sku],
                location_id=world.locations[op.location],
                quantity=op.quantity,
                sellable=op.sellable,
                reference=f"rma-{uuid.uuid4().hex[:8]}",
            )
    raise AssertionError(f"no runner for {op!r}")


async def remember(conn: asyncpg.Connection, world: World, op: Any, result: Any) -> None:
    """Note what a successful operation made, for later operations to pick from."""
    match op:
        case Reserve():
            world.reservations.append(result["reservation_id"])
        case Commit():
            reservation = world.chosen(world.reservations, op.pick, None)
            world.committed.setdefault(reservation, world.order_of_last_commit)
            rows = await conn.fetch(
                """SELECT order_id, allocation_id::text AS id FROM allocations
                   WHERE sku = ANY($1::text[]) ORDER BY 1, 2""",
                world.skus,
            )
            world.orders = sorted({r["order_id"] for r in rows})
            world.allocations = [(r["order_id"], r["id"]) for r in rows]
        case Ship():
            world.shipped.add(world.chosen(world.allocations, op.pick, ("", ""))[1])


def changes_nothing(world: World, op: Any, result: Any) -> bool:
    """Whether a successful operation is one that must leave everything as it was."""
    match op:
        case Count():
            return bool(result.status == "stale")
        case Cancel() | Expire():
            return bool(result == 0)
    return world.repeated


async def snapshot(conn: asyncpg.Connection, world: World) -> dict[str, list[tuple[Any, ...]]]:
    """Everything an operation may change, for this example's SKUs and channels."""
    by_sku = [
        """SELECT sku, location_id, on_hand, reserved, allocated, version FROM stock
           WHERE sku = ANY($1::text[]) ORDER BY 1, 2""",
        """SELECT movement_id, sku, location_id, quantity, reason FROM stock_movements
           WHERE sku = ANY($1::text[]) ORDER BY 1""",
        """SELECT source, sku, location_id, last_sequence FROM source_sequences
           WHERE sku = ANY($1::text[]) ORDER BY 1, 2, 3""",
        """SELECT reservation_id, sku, location_id, quantity FROM reservation_lines
           WHERE sku = ANY($1::text[]) ORDER BY 1, 2, 3""",
        """SELECT allocation_id, order_id, sku, location_id, quantity, status FROM allocations
           WHERE sku = ANY($1::text[]) ORDER BY 1""",
    ]
    by_channel = [
        """SELECT reservation_id, status, expires_at, order_id, version FROM reservations
           WHERE channel_id = ANY($1::text[]) ORDER BY 1""",
        """SELECT channel_id, sku, available, version FROM availability
           WHERE channel_id = ANY($1::text[]) ORDER BY 1, 2""",
    ]
    state = {sql: await conn.fetch(sql, world.skus) for sql in by_sku}
    state |= {sql: await conn.fetch(sql, world.channels) for sql in by_channel}
    # Events of any kind: a refusal writes none.
    state["outbox"] = await conn.fetch("SELECT max(id) FROM outbox")
    return {sql: [tuple(row.values()) for row in rows] for sql, rows in state.items()}


async def check_invariants(conn: asyncpg.Connection, world: World, after: str) -> None:
    skus = world.skus
    stock = await conn.fetch(
        """SELECT s.sku, s.location_id, s.on_hand, s.reserved, s.allocated,
                  (SELECT coalesce(sum(m.quantity), 0) FROM stock_movements m
                   WHERE m.sku = s.sku AND m.location_id = s.location_id) AS ledger,
                  (SELECT coalesce(sum(l.quantity), 0)
                   FROM reservation_lines l JOIN reservations r USING (reservation_id)
                   WHERE l.sku = s.sku AND l.location_id = s.location_id
                     AND r.status = 'active') AS reserved_by_lines,
                  (SELECT coalesce(sum(a.quantity), 0) FROM allocations a
                   WHERE a.sku = s.sku AND a.location_id = s.location_id
                     AND a.status = 'allocated') AS open_allocations
           FROM stock s WHERE s.sku = ANY($1::text[])""",
        skus,
    )
    for row in stock:
        item = f"{row['sku']}@{row['location_id']} after {after}"
        assert min(row["on_hand"], row["reserved"], row["allocated"]) >= 0, item
        assert row["reserved"] + row["allocated"] <= row["on_hand"], item
        assert row["ledger"] == row["on_hand"], f"the ledger does not sum to on_hand: {item}"
        assert row["reserved"] == row["reserved_by_lines"], f"reserved vs active lines: {item}"
        assert row["allocated"] == row["open_allocations"], f"allocated vs allocations: {item}"
    # No hold and no movement where there is no stock row.
    orphans = await conn.fetchval(
        """SELECT count(*) FROM (
               SELECT sku, location_id FROM stock_movements WHERE sku = ANY($1::text[])
               UNION SELECT l.sku, l.location_id FROM reservation_lines l
                     JOIN reservations r USING (reservation_id)
                     WHERE l.sku = ANY($1::text[]) AND r.status = 'active'
               UNION SELECT sku, location_id FROM allocations
                     WHERE sku = ANY($1::text[]) AND status = 'allocated') AS held
           WHERE NOT EXISTS (SELECT 1 FROM stock s
                             WHERE s.sku = held.sku AND s.location_id = held.location_id)""",
        skus,
    )
    assert orphans == 0, f"movements or holds without a stock row after {after}"
    levels = await repository.levels(conn, skus)
    published = {
        (r["channel_id"], r["sku"]): r["available"]
        for r in await conn.fetch(
            "SELECT channel_id, sku, available FROM availability WHERE channel_id = ANY($1)",
            world.channels,
        )
    }
    for channel_id in world.channels:
        channel = await repository.channel(conn, channel_id)
        assert channel is not None
        for sku in skus:
            expected = domain.channel_available(
                sku, channel.sources, levels, channel.availability_cap
            )
            assert expected >= 0
            assert published.get((channel_id, sku), 0) == expected, (
                f"published availability of {sku} in {channel_id} after {after}"
            )


async def active_reservations(conn: asyncpg.Connection, world: World) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT reservation_id::text AS id, expires_at FROM reservations
               WHERE channel_id = ANY($1::text[]) AND status = 'active'""",
            world.channels,
        )
    )


async def check_sweep(
    conn: asyncpg.Connection,
    world: World,
    active_before: list[asyncpg.Record],
    expired: int,
    after: str,
) -> None:
    """After a sweep at T no active reservation has expires_at <= T, and none expired early."""
    now = world.clock.now()
    still_active = {r["id"] for r in await active_reservations(conn, world)}
    overdue = [r for r in active_before if r["expires_at"] <= now]
    assert not still_active & {r["id"] for r in overdue}, f"outlived its TTL: {after}"
    assert still_active == {r["id"] for r in active_before if r["expires_at"] > now}, (
        f"a reservation expired before its TTL: {after}"
    )
    # The sweep is global: it may also expire what earlier examples left behind.
    assert expired >= len(overdue)


async def run_step(pool: asyncpg.Pool, world: World, op: Any, after: str) -> None:
    async with pool.acquire() as conn:
        before = await snapshot(conn, world)
        active_before = await active_reservations(conn, world)
        try:
            async with conn.transaction():
                result = await operation_runner(world, op)(conn)
        except REFUSALS as refusal:
            event(f"{type(op).__name__} refused: {type(refusal).__name__}")
            assert await snapshot(conn, world) == before, f"a refusal changed state: {after}"
            await check_invariants(conn, world, after)
            return
        event(f"{type(op).__name__} done")
        if changes_nothing(world, op, result):
            assert await snapshot(conn, world) == before, f"a no-op changed state: {after}"
        await remember(conn, world, op, result)
        await check_invariants(conn, world, after)
        if isinstance(op, Expire):
            await check_sweep(conn, world, active_before, result, after)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stock=initial_stock, ops=st.lists(operations, min_size=20, max_size=40))
async def test_random_interleavings_keep_stock_ledger_holds_and_availability_consistent(
    pool: asyncpg.Pool, stock: list[int], ops: list[Any]
) -> None:
    world = World.fresh()
    await build_network(pool, world, stock)
    async with pool.acquire() as conn:
        await check_invariants(conn, world, "the network was built")
    for step, op in enumerate(ops):
        if isinstance(op, Advance):
            world.clock.advance(timedelta(seconds=op.seconds))
        else:
            await run_step(pool, world, op, f"step {step}: {op!r}")
