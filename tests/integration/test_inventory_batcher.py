"""The reservation batcher against the real database: batches that run side by side, requests
that wait for a SKU a running batch holds, and an Idempotency-Key that another replica stores
while a batch is in flight."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest

from omnistock.inventory import domain, repository, service
from omnistock.inventory.reserving import OutOfStock, ReservationBatcher, ReserveStock, store
from omnistock.platform import db, idempotency
from omnistock.platform.clock import ManualClock
from omnistock.platform.outbox import OutboxRows
from omnistock.platform.problems import Problem
from omnistock.platform.settings import Settings
from tests.integration.conftest import create_service_schema, drop_schema

pytestmark = pytest.mark.integration

clock = ManualClock(datetime(2026, 11, 29, 12, tzinfo=UTC))
CHANNELS = ("shop-pl", "shop-cz")


@pytest.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """Two channels selling from a warehouse and a store (with safety stock) of their own."""
    schema = await create_service_schema(settings, "inventory", "omnistock.inventory")
    pool = await db.create_pool(settings.database_url, schema, min_size=2, max_size=8)
    try:
        async with pool.acquire() as conn, conn.transaction():
            for location in ("wh", "store"):
                await service.put_location(conn, location, "warehouse", "PL", ["ship"], location)
            for channel in CHANNELS:
                await service.put_channel(
                    conn,
                    clock,
                    channel,
                    "brand",
                    "PL",
                    [domain.Source("wh", 1), domain.Source("store", 2, safety_stock=1)],
                )
        yield pool
    finally:
        await pool.close()
        await drop_schema(settings, schema)


async def receive(pool: asyncpg.Pool, units: dict[tuple[str, str], int]) -> None:
    """Goods received: ``units`` by (sku, location)."""
    async with pool.acquire() as conn, conn.transaction():
        await repository.lock_skus(conn, {sku for sku, _ in units})
        await service.commit_changes(
            conn,
            clock,
            [
                service.Change(sku, location, on_hand=quantity, movement_reason="receipt")
                for (sku, location), quantity in units.items()
                if quantity
            ],
        )


async def test_concurrent_batches_never_oversell_and_keep_every_answer(
    pool: asyncpg.Pool,
) -> None:
    """400 buyers of one or two of 300 scarce SKUs: enough for batches to run side by side, for
    requests to wait behind a running batch, and for SKUs to sell out."""
    skus = [f"SKU-{n:03d}" for n in range(300)]
    await receive(
        pool,
        {
            (sku, location): (n + len(location)) % 3
            for n, sku in enumerate(skus)
            for location in ("wh", "store")
        },
    )
    batcher = ReservationBatcher(pool, clock, workers=4, max_batch=64)
    batcher.start()
    rng = random.Random(12)
    commands = [
        ReserveStock(
            rng.choice(CHANNELS),
            tuple((sku, rng.randint(1, 2)) for sku in rng.sample(skus, rng.randint(1, 2))),
            f"client-{n}",
        )
        for n in range(400)
    ]

    async def buy(n: int) -> idempotency.StoredAnswer | None:
        try:
            return await batcher.submit(commands[n], f"client-{n}", f"key-{n}", f"print-{n}")
        except OutOfStock:
            return None

    try:
        answers = await asyncio.gather(*(buy(n) for n in range(400)))
        replays = await asyncio.gather(*(buy(n) for n in range(400)))
    finally:
        await batcher.stop()
    assert batcher.batches > 1
    granted = [a for a in answers if a is not None]
    assert granted
    assert len(granted) < 400
    for first, again in zip(answers, replays, strict=True):
        if first is None:
            continue
        assert again is not None
        assert again.replayed
        assert again.body == first.body
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """SELECT s.sku, s.location_id, s.on_hand, s.reserved,
                      (SELECT coalesce(sum(l.quantity), 0) FROM reservation_lines l
                       WHERE l.sku = s.sku AND l.location_id = s.location_id) AS lines
               FROM stock s"""
        )
        for row in rows:
            assert row["reserved"] <= row["on_hand"], dict(row)
            assert row["reserved"] == row["lines"], dict(row)
        stored = await conn.fetch("SELECT response_body FROM idempotency_keys")
        assert sorted(orjson.loads(r["response_body"])["reservation_id"] for r in stored) == sorted(
            a.body["reservation_id"] for a in granted
        )
        events = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = 'omnistock.inventory.reservations.v1'"
        )
        assert events == len(granted)
        levels = await repository.levels(conn, skus)
        for channel_id in CHANNELS:
            channel = await repository.channel(conn, channel_id)
            assert channel is not None
            published = {
                r["sku"]: r["available"]
                for r in await conn.fetch(
                    "SELECT sku, available FROM availability WHERE channel_id = $1", channel_id
                )
            }
            for sku in skus:
                assert published.get(sku, 0) == domain.channel_available(
                    sku, channel.sources, levels, channel.availability_cap
                )


async def test_a_key_another_replica_stores_meanwhile_gets_that_answer_and_reserves_nothing(
    pool: asyncpg.Pool,
) -> None:
    await receive(pool, {("A", "wh"): 10})
    theirs = {"reservation_id": "from-the-other-replica"}
    async with pool.acquire() as other:
        other_tx = other.transaction()
        await other_tx.start()
        await other.execute(
            """INSERT INTO idempotency_keys
                   (principal, idempotency_key, request_hash, status_code, response_body)
               VALUES ('web', 'shared-key', 'print', 201, $1)""",
            orjson.dumps(theirs),
        )
        batcher = ReservationBatcher(pool, clock, workers=1)
        batcher.start()
        try:
            shared = asyncio.create_task(
                batcher.submit(
                    ReserveStock("shop-pl", (("A", 1),), "web"), "web", "shared-key", "print"
                )
            )
            own = asyncio.create_task(
                batcher.submit(
                    ReserveStock("shop-pl", (("A", 2),), "app"), "app", "own-key", "print"
                )
            )
            await asyncio.sleep(0.3)  # the batch now waits on the other replica's key
            assert not shared.done()
            await other_tx.commit()
            shared_answer, own_answer = await asyncio.wait_for(asyncio.gather(shared, own), 10)
        finally:
            await batcher.stop()
    assert shared_answer.replayed
    assert shared_answer.body == theirs
    assert not own_answer.replayed
    assert own_answer.status == 201
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT sum(reserved) FROM stock WHERE sku = 'A'") == 2
        assert await conn.fetchval("SELECT count(*) FROM reservations") == 1


async def test_a_batch_publishes_the_availability_of_every_channel_selling_from_its_locations(
    pool: asyncpg.Pool,
) -> None:
    """The outlet channel shares only the store with the shops and has a location of its own:
    a shop's reservation from the store moves the outlet's figure too, counted with the
    outlet's own stock, and every figure that moved is published once, with its next version."""
    async with pool.acquire() as conn, conn.transaction():
        await service.put_location(conn, "outlet", "store", "PL", ["ship"], "outlet")
        await service.put_channel(
            conn,
            clock,
            "outlet-pl",
            "brand",
            "PL",
            [domain.Source("store", 1, safety_stock=1), domain.Source("outlet", 2)],
            availability_cap=5,
        )
    await receive(pool, {("A", "store"): 4, ("A", "outlet"): 3, ("B", "wh"): 2})

    async def figures() -> dict[tuple[str, str], tuple[int, int]]:
        rows = await pool.fetch("SELECT channel_id, sku, available, version FROM availability")
        return {(r["channel_id"], r["sku"]): (r["available"], r["version"]) for r in rows}

    before = await figures()
    assert before[("outlet-pl", "A")] == (5, 1)  # min(5, (4 - 1) + 3)
    batcher = ReservationBatcher(pool, clock, workers=1)
    batcher.start()
    try:
        answer = await batcher.submit(
            ReserveStock("shop-pl", (("A", 2), ("B", 1)), "web"), "web", "key", "print"
        )
    finally:
        await batcher.stop()
    assert answer.status == 201
    after = await figures()
    moved = {key: figure for key, figure in after.items() if before.get(key) != figure}
    # The shops see A at the store (less their safety stock of 1) and B at the warehouse; the
    # outlet sees A at the store and at the outlet, capped at 5.
    assert moved == {
        ("shop-pl", "A"): (1, 2),
        ("shop-cz", "A"): (1, 2),
        ("outlet-pl", "A"): (4, 2),
        ("shop-pl", "B"): (1, 2),
        ("shop-cz", "B"): (1, 2),
    }
    async with pool.acquire() as conn:
        levels = await repository.levels(conn, ["A", "B"])
        for channel_id in (*CHANNELS, "outlet-pl"):
            channel = await repository.channel(conn, channel_id)
            assert channel is not None
            for sku in ("A", "B"):
                assert after.get((channel_id, sku), (0, 0))[0] == domain.channel_available(
                    sku, channel.sources, levels, channel.availability_cap
                )
        published = await conn.fetch(
            """SELECT message_key, payload FROM outbox
               WHERE topic = 'omnistock.inventory.availability.v1' ORDER BY id DESC LIMIT 5"""
        )
    assert sorted(r["message_key"] for r in published) == sorted(
        f"{channel_id}:{sku}" for channel_id, sku in moved
    )
    for row in published:
        data = orjson.loads(row["payload"])["data"]
        assert (data["available"], data["version"]) == moved[(data["channel_id"], data["sku"])]


async def test_a_batch_plans_against_what_the_holder_of_its_sku_lock_committed(
    pool: asyncpg.Pool,
) -> None:
    """The batch's reads come after its SKU locks are granted: a writer that held a lock and
    sold the last unit meanwhile is seen, so the batch refuses instead of overselling (or being
    rolled back by the stock's CHECK) and publishes the figure that writer left."""
    await receive(pool, {("A", "wh"): 1})
    async with pool.acquire() as other:
        other_tx = other.transaction()
        await other_tx.start()
        await repository.lock_skus(other, ["A"])
        await service.adjust_stock(
            other, clock, sku="A", location_id="wh", quantity=-1, reason="store_sale"
        )
        batcher = ReservationBatcher(pool, clock, workers=1)
        batcher.start()
        try:
            buying = asyncio.create_task(
                batcher.submit(ReserveStock("shop-pl", (("A", 1),), "web"), "web", "k", "print")
            )
            await asyncio.sleep(0.3)  # the batch now waits for the SKU lock
            assert not buying.done()
            await other_tx.commit()
            with pytest.raises(OutOfStock):
                await asyncio.wait_for(buying, 10)
        finally:
            await batcher.stop()
    assert batcher.batches == 1  # refused by the batch itself, not after a rollback
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM reservations") == 0
        figures = await conn.fetch("SELECT available, version FROM availability WHERE sku = 'A'")
    assert [tuple(r) for r in figures] == [(0, 2), (0, 2)]


async def test_a_key_used_before_for_another_request_is_refused_in_a_batch(
    pool: asyncpg.Pool,
) -> None:
    await receive(pool, {("A", "wh"): 5})
    batcher = ReservationBatcher(pool, clock, workers=1)
    batcher.start()
    try:
        first = await batcher.submit(
            ReserveStock("shop-pl", (("A", 1),), "web"), "web", "key", "print"
        )
        again, other = await asyncio.gather(
            batcher.submit(ReserveStock("shop-pl", (("A", 1),), "web"), "web", "key", "print"),
            batcher.submit(ReserveStock("shop-pl", (("A", 2),), "web"), "web", "key", "other"),
            return_exceptions=True,
        )
    finally:
        await batcher.stop()
    assert isinstance(again, idempotency.StoredAnswer)
    assert again.replayed
    assert again.body == first.body
    assert isinstance(other, Problem)
    assert other.status == 422
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT sum(reserved) FROM stock WHERE sku = 'A'") == 1


async def test_a_figure_moved_outside_the_sku_locks_rolls_the_batch_back(
    pool: asyncpg.Pool,
) -> None:
    """Every writer of stock and availability takes the SKU locks; one that did not would
    leave the batch writing a figure or version it did not read. The write checks it wrote every
    row as read, and refuses otherwise."""
    await receive(pool, {("A", "wh"): 5})
    async with pool.acquire() as conn, conn.transaction():
        state = await store.read_state(conn, ["A"], ["shop-pl"], [], clock.now(), [])
        available, version = state.figures[("shop-pl", "A")]
        await conn.execute(
            "UPDATE availability SET version = version + 1 WHERE channel_id = 'shop-pl'"
        )
        with pytest.raises(store.StateMoved):
            await store.write(
                conn,
                clock.now(),
                store.Reservations([], [], [], [], []),
                store.Lines([], [], [], []),
                store.Answers([], [], [], []),
                store.Holds(["A"], ["wh"], [1]),
                store.Figures(["shop-pl"], ["A"], [available - 1], [version + 1]),
                OutboxRows([], [], [], [], None),
            )
