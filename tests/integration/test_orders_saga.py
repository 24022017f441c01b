"""The saga's bookkeeping on the real database, with a clock the tests move: leases, retries
with backoff, giving up, compensation, cancels racing a step under way, overdue orders."""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import pytest

from omnistock.orders import saga, service
from omnistock.orders.domain import TRANSITIONS, CancelReason, OrderStatus, RetryPolicy
from omnistock.orders.participants import Participants
from omnistock.orders.settings import OrdersSettings
from omnistock.orders.worker import SagaWorker
from omnistock.platform import db
from omnistock.platform.client import Answer, CallFailed
from omnistock.platform.clock import ManualClock
from omnistock.platform.ratelimit import ConcurrencyLimit
from omnistock.platform.settings import Settings
from tests.integration.conftest import create_service_schema, drop_schema

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
POLICIES = service.Policies(
    forward=RetryPolicy(3, timedelta(seconds=1), timedelta(seconds=60)),
    compensation=RetryPolicy(2**31, timedelta(seconds=1), timedelta(seconds=300)),
    payment_poll=timedelta(seconds=1),
)


@pytest.fixture(scope="module")
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    schema = await create_service_schema(settings, "orders", "omnistock.orders")
    pool = await db.create_pool(settings.database_url, schema, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()
        await drop_schema(settings, schema)


@pytest.fixture
async def clock(pool: asyncpg.Pool) -> ManualClock:
    # Every test starts from an empty table: claims see only the test's own orders.
    await pool.execute("TRUNCATE order_history, order_lines, orders, outbox CASCADE")
    return ManualClock(T0)


async def place(
    pool: asyncpg.Pool, clock: ManualClock, customer: str = "c-1", points: int = 0
) -> str:
    order = {
        "customer_id": customer,
        "channel_id": "brand-pl",
        "platform": "web",
        "currency": "PLN",
        "reservation_id": str(uuid.uuid4()),
        "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": 1999}],
        "delivery": {"kind": "store", "store_id": "waw-1"},
        "payment_method": "card",
        "payment_token": "tok_visa",
        "loyalty_points": points,
    }
    async with pool.acquire() as conn, conn.transaction():
        return await service.place_order(conn, clock, order, timedelta(minutes=15))


async def claim(pool: asyncpg.Pool, clock: ManualClock) -> list[service.Claim]:
    async with pool.acquire() as conn, conn.transaction():
        return await service.claim_due(conn, clock, LEASE, 10)


async def record(
    pool: asyncpg.Pool, clock: ManualClock, claimed: service.Claim, outcome: saga.Outcome
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await service.record_outcome(conn, clock, claimed, outcome, POLICIES)


async def order(pool: asyncpg.Pool, order_id: str) -> Any:
    return await pool.fetchrow("SELECT * FROM orders WHERE order_id = $1", uuid.UUID(order_id))


async def statuses(pool: asyncpg.Pool, order_id: str) -> list[tuple[int, str, str | None]]:
    rows = await pool.fetch(
        "SELECT version, status, reason FROM order_history WHERE order_id = $1 ORDER BY version",
        uuid.UUID(order_id),
    )
    return [(r["version"], r["status"], r["reason"]) for r in rows]


async def test_the_answer_to_a_placement_is_the_order_as_it_reads_back(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    order = {
        "customer_id": "c-1",
        "channel_id": "brand-pl",
        "platform": "ios",
        "currency": "PLN",
        "reservation_id": str(uuid.uuid4()).upper(),
        "lines": [
            {"sku": "SKU-2", "quantity": 1, "unit_price": 4999},
            {"sku": "SKU-1", "quantity": 2, "unit_price": 1999},
        ],
        "delivery": {"kind": "locker", "collection_point_id": "locker-waw-17"},
        "payment_method": "try_before_you_buy",
        "payment_token": "tok_klarna",
        "loyalty_points": 150,
    }
    async with pool.acquire() as conn, conn.transaction():
        answered = await service.placed_order(conn, clock, order, timedelta(minutes=15))
    async with pool.acquire() as conn:
        assert answered == await service.order_view(conn, answered["order_id"])


async def test_the_saga_runs_its_steps_in_order_to_confirmed_one_version_and_event_each(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    order_id = await place(pool, clock)
    for step in saga.STEPS:
        (claimed,) = await claim(pool, clock)
        assert claimed.step == step.name
        facts = {"payment_id": "p-1"} if step.name == "authorize_payment" else {}
        await record(pool, clock, claimed, saga.Done(facts))
    assert await claim(pool, clock) == []
    row = await order(pool, order_id)
    assert (row["status"], row["version"], row["step"], row["payment_token"]) == (
        "confirmed",
        4,
        None,
        None,
    )
    assert row["payment_id"] == "p-1"
    assert [s for _, s, _ in await statuses(pool, order_id)] == [
        "placed",
        "allocated",
        "authorized",
        "confirmed",
    ]
    assert await pool.fetchval("SELECT count(*) FROM outbox") == 4


@pytest.mark.parametrize(
    ("points", "steps"),
    [
        (500, ["commit_reservation", "authorize_payment", "hold_points"]),
        # Nothing to hold: the step is passed in the authorization's transaction.
        (0, ["commit_reservation", "authorize_payment"]),
    ],
)
async def test_a_worker_carries_an_order_on_through_its_steps_under_fresh_leases(
    pool: asyncpg.Pool, clock: ManualClock, points: int, steps: list[str]
) -> None:
    order_id = await place(pool, clock, points=points)
    (following,) = await claim(pool, clock)
    walked, leases = [], []
    while following is not None:
        walked.append(following.step)
        leases.append(following.lease_id)
        facts = {"payment_id": "p-1"} if following.step == "authorize_payment" else {}
        async with pool.acquire() as conn, conn.transaction():
            following = await service.record_outcome(
                conn, clock, following, saga.Done(facts), POLICIES, carry_on_for=LEASE
            )
        if following is not None:
            assert await claim(pool, clock) == []  # still held: no other worker takes it
            if following.step == "hold_points":
                assert following.order.payment_id == "p-1"
    assert walked == steps
    assert len(set(leases)) == len(leases)
    row = await order(pool, order_id)
    assert (row["status"], row["version"], row["step"], row["lease_id"]) == (
        "confirmed",
        4,
        None,
        None,
    )
    assert (row["payment_id"], row["payment_token"]) == ("p-1", None)
    assert [s for _, s, _ in await statuses(pool, order_id)] == [
        "placed",
        "allocated",
        "authorized",
        "confirmed",
    ]


async def test_a_step_that_fails_or_waits_is_not_carried_on_and_its_order_let_go(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    order_id = await place(pool, clock)
    (commit,) = await claim(pool, clock)
    async with pool.acquire() as conn, conn.transaction():
        authorize = await service.record_outcome(
            conn, clock, commit, saga.Done(), POLICIES, carry_on_for=LEASE
        )
    assert authorize is not None
    async with pool.acquire() as conn, conn.transaction():
        after = await service.record_outcome(
            conn, clock, authorize, saga.Pending("pending"), POLICIES, carry_on_for=LEASE
        )
    assert after is None
    row = await order(pool, order_id)
    assert (row["step"], row["lease_id"]) == ("authorize_payment", None)
    clock.advance(POLICIES.payment_poll)
    (again,) = await claim(pool, clock)
    assert again.step == "authorize_payment"


async def test_a_carried_on_order_whose_worker_died_is_taken_over_once_its_lease_lapses(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    await place(pool, clock)
    (commit,) = await claim(pool, clock)
    async with pool.acquire() as conn, conn.transaction():
        carried = await service.record_outcome(
            conn, clock, commit, saga.Done(), POLICIES, carry_on_for=LEASE
        )
    assert carried is not None
    assert await claim(pool, clock) == []
    clock.advance(LEASE)
    (taken_over,) = await claim(pool, clock)
    assert (taken_over.step, taken_over.lease_id != carried.lease_id) == (
        "authorize_payment",
        True,
    )


async def test_a_step_that_keeps_failing_backs_off_then_is_compensated_and_cancelled(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    order_id = await place(pool, clock)
    for attempt in (1, 2):
        (claimed,) = await claim(pool, clock)
        await record(pool, clock, claimed, saga.Failed("inventory: 503"))
        assert await claim(pool, clock) == []  # backing off
        clock.advance(POLICIES.forward.delay(attempt))
    row = await order(pool, order_id)
    assert (row["step_attempts"], row["last_error"]) == (2, "inventory: 503")

    (claimed,) = await claim(pool, clock)
    await record(pool, clock, claimed, saga.Failed("inventory: 503"))
    row = await order(pool, order_id)
    assert (row["status"], row["cancel_reason"], row["step"]) == (
        "cancelling",
        "step_failed",
        "undo:commit_reservation",
    )
    assert row["cancel_detail"] == "commit_reservation: inventory: 503"

    # Compensation is retried for as long as it takes, never given up.
    for _ in range(5):
        (undo,) = await claim(pool, clock)
        await record(pool, clock, undo, saga.Failed("inventory unreachable"))
        clock.advance(timedelta(seconds=300))
    (undo,) = await claim(pool, clock)
    await record(pool, clock, undo, saga.Done())
    assert await statuses(pool, order_id) == [
        (1, "placed", None),
        (2, "cancelling", "step_failed"),
        (3, "cancelled", "step_failed"),
    ]


async def test_a_refusal_compensates_from_the_refused_step_backwards(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    order_id = await place(pool, clock)
    (commit,) = await claim(pool, clock)
    await record(pool, clock, commit, saga.Done())
    (authorize,) = await claim(pool, clock)
    await record(pool, clock, authorize, saga.Refused(CancelReason.PAYMENT_DECLINED, "tok"))
    undone = []
    while claimed := await claim(pool, clock):
        undone.append(claimed[0].step)
        await record(pool, clock, claimed[0], saga.Done())
    assert undone == ["undo:authorize_payment", "undo:commit_reservation"]
    row = await order(pool, order_id)
    assert (row["status"], row["cancel_reason"], row["cancel_detail"]) == (
        "cancelled",
        "payment_declined",
        "tok",
    )


async def test_an_answer_that_comes_after_its_lease_lapsed_changes_nothing(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    order_id = await place(pool, clock)
    (late,) = await claim(pool, clock)
    assert await claim(pool, clock) == []  # held
    clock.advance(LEASE)
    (taken_over,) = await claim(pool, clock)
    assert taken_over.lease_id != late.lease_id
    await record(pool, clock, late, saga.Done())
    assert (await order(pool, order_id))["status"] == "placed"
    await record(pool, clock, taken_over, saga.Done())
    assert (await order(pool, order_id))["status"] == "allocated"


async def test_a_cancel_during_a_step_lets_the_step_finish_then_compensates_it(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    order_id = await place(pool, clock)
    (commit,) = await claim(pool, clock)
    await record(pool, clock, commit, saga.Done())
    (authorize,) = await claim(pool, clock)
    async with pool.acquire() as conn, conn.transaction():
        await service.cancel_order(conn, clock, order_id, CancelReason.BY_CUSTOMER)
    assert await claim(pool, clock) == []  # the authorization's call is still under way
    await record(pool, clock, authorize, saga.Done({"payment_id": "p-9"}))
    row = await order(pool, order_id)
    assert (row["status"], row["payment_id"], row["step"]) == (
        "cancelling",
        "p-9",
        "undo:authorize_payment",
    )
    (undo,) = await claim(pool, clock)
    assert undo.step == "undo:authorize_payment"


async def test_concurrent_cancels_make_one_change(pool: asyncpg.Pool, clock: ManualClock) -> None:
    order_id = await place(pool, clock)

    async def cancel() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await service.cancel_order(conn, clock, order_id, CancelReason.BY_STAFF)

    await asyncio.gather(*(cancel() for _ in range(4)))
    assert await statuses(pool, order_id) == [
        (1, "placed", None),
        (2, "cancelling", "cancelled_by_staff"),
    ]


async def test_orders_not_confirmed_in_time_cancel_themselves_once_no_step_is_under_way(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    waiting = await place(pool, clock, "c-1")
    busy = await place(pool, clock, "c-2")
    clock.advance(timedelta(minutes=15) - timedelta(seconds=5))
    async with pool.acquire() as conn, conn.transaction():
        assert await service.cancel_overdue(conn, clock) == 0
    claims = await claim(pool, clock)
    (held,) = [c for c in claims if c.order.order_id == busy]
    for other in claims:
        if other is not held:
            await record(pool, clock, other, saga.Pending("psp deciding"))
    clock.advance(timedelta(seconds=5))
    async with pool.acquire() as conn, conn.transaction():
        assert await service.cancel_overdue(conn, clock) == 1  # the busy one's lease holds
    row = await order(pool, waiting)
    assert (row["status"], row["cancel_reason"]) == ("cancelling", "confirmation_timed_out")
    clock.advance(LEASE)
    async with pool.acquire() as conn, conn.transaction():
        assert await service.cancel_overdue(conn, clock) == 1
    async with pool.acquire() as conn:
        stuck = await service.stuck_orders(conn, clock, timedelta(minutes=10))
    assert {s["order_id"] for s in stuck} == set()  # compensation only just started
    clock.advance(timedelta(minutes=11))
    async with pool.acquire() as conn:
        stuck = await service.stuck_orders(conn, clock, timedelta(minutes=10))
    assert {s["order_id"] for s in stuck} == {waiting, busy}


OUTCOMES: list[saga.Outcome] = [
    saga.Done({"payment_id": "p-1"}),
    saga.Refused(CancelReason.PAYMENT_DECLINED, "declined"),
    saga.Pending("psp deciding"),
    saga.Failed("503"),
]


@pytest.mark.parametrize("seed", range(40))
async def test_any_run_of_outcomes_and_cancels_walks_the_table_one_version_at_a_time(
    pool: asyncpg.Pool, clock: ManualClock, seed: int
) -> None:
    """Whatever the participants answer, in whatever order, and whenever a cancel comes: every
    move is one the table allows, versions go up by one with an event each, and the order
    ends confirmed or cancelled with a reason once compensation gets through."""
    chance = random.Random(seed)
    order_id = await place(pool, clock)
    for _ in range(chance.randint(0, 12)):
        claims = await claim(pool, clock)
        if chance.random() < 0.1:
            async with pool.acquire() as conn, conn.transaction():
                with contextlib.suppress(service.NotCancellable):
                    await service.cancel_order(conn, clock, order_id, CancelReason.BY_STAFF)
        for claimed in claims:
            await record(pool, clock, claimed, chance.choice(OUTCOMES))
        clock.advance(timedelta(seconds=301))
    # From here on every participant says yes: the saga has to come to an end.
    while claims := await claim(pool, clock):
        await record(pool, clock, claims[0], saga.Done())
        clock.advance(timedelta(seconds=301))

    history = await pool.fetch(
        "SELECT version, status, previous_status, reason FROM order_history WHERE order_id = $1"
        " ORDER BY version",
        uuid.UUID(order_id),
    )
    assert [h["version"] for h in history] == list(range(1, len(history) + 1))
    for move in history[1:]:
        assert OrderStatus(move["status"]) in TRANSITIONS[OrderStatus(move["previous_status"])]
    row = await order(pool, order_id)
    assert row["version"] == len(history)
    assert await pool.fetchval("SELECT count(*) FROM outbox") == len(history)
    assert row["status"] in ("confirmed", "cancelled")
    assert (row["status"] == "cancelled") == (row["cancel_reason"] is not None)
    assert row["step"] is None
    assert row["lease_id"] is None


class HeldCalls:
    """Participants whose every call waits until the test answers it (or fails it: the order is
    then tried again later on the test's clock, which stands still)."""

    inventory = pricing = payments = loyalty = None

    def __init__(self) -> None:
        self.arrived: asyncio.Queue[tuple[str, asyncio.Future[Answer]]] = asyncio.Queue()
        self.under_way = self.most = 0

    async def call(self, _client: Any, method: str, path: str, **__: Any) -> Answer:
        gate: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self.under_way += 1
        self.most = max(self.most, self.under_way)
        await self.arrived.put((path, gate))
        try:
            return await gate
        finally:
            self.under_way -= 1


def fail(gate: asyncio.Future[Answer]) -> None:
    gate.set_exception(CallFailed("let go by the test"))


@pytest.mark.parametrize(("placing", "carried"), [(20, 3), (15, 12)])
async def test_the_saga_carries_fewer_orders_while_checkout_is_busy(
    pool: asyncpg.Pool, clock: ManualClock, placing: int, carried: int
) -> None:
    orders = 12
    for n in range(orders):
        await place(pool, clock, customer=f"c-{n}")
    own = OrdersSettings(
        saga_in_flight=64, worker_batch_size=20, intake_busy_at=16, saga_in_flight_when_busy=3
    )
    intake = ConcurrencyLimit(64, smoothing_s=0)
    for _ in range(placing):  # orders being placed in this replica
        intake.try_enter()
    participants = HeldCalls()
    worker = SagaWorker(cast(Participants, participants), clock, own, intake=intake)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(pool, stop))
    held: list[asyncio.Future[Answer]] = []
    let_go = 0
    try:
        while let_go < orders:
            _, gate = await asyncio.wait_for(participants.arrived.get(), 30)
            held.append(gate)
            if len(held) < carried and let_go + len(held) < orders:
                continue
            # Every order the worker has taken is one whose call is held here.
            leased = await pool.fetchval("SELECT count(*) FROM orders WHERE lease_id IS NOT NULL")
            assert leased == len(held)
            for gate in held:
                fail(gate)
            let_go += len(held)
            held = []
    finally:
        stop.set()
        await running
    assert participants.most == carried
    # Each order's first step was tried once and waits for its retry.
    rows = await pool.fetch("SELECT step, step_attempts FROM orders")
    assert {(r["step"], r["step_attempts"]) for r in rows} == {("commit_reservation", 1)}


def test_the_saga_gives_way_to_a_rush_for_a_bounded_time(clock: ManualClock) -> None:
    own = OrdersSettings(
        saga_in_flight=64,
        intake_busy_at=16,
        saga_in_flight_when_busy=2,
        saga_gives_way_at_most_s=30,
    )
    intake = ConcurrencyLimit(64, smoothing_s=0)
    worker = SagaWorker(cast(Participants, HeldCalls()), clock, own, intake=intake)
    for _ in range(20):
        intake.try_enter()
    assert worker.room() == 2
    clock.advance(timedelta(seconds=29))
    assert worker.room() == 2
    clock.advance(timedelta(seconds=1))
    assert worker.room() == 64  # the rush lasted too long: confirmations get their share back
    for _ in range(10):
        intake.leave()
    assert worker.room() == 64
    for _ in range(10):  # a new rush
        intake.try_enter()
    assert worker.room() == 2


async def test_orders_carried_beyond_the_room_of_a_rush_are_let_go_after_their_step(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    for n in range(4):
        await place(pool, clock, customer=f"c-{n}")
    own = OrdersSettings(saga_in_flight=64, intake_busy_at=16, saga_in_flight_when_busy=2)
    intake = ConcurrencyLimit(64, smoothing_s=0)
    participants = HeldCalls()
    worker = SagaWorker(cast(Participants, participants), clock, own, intake=intake)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(pool, stop))
    try:
        commits = [await asyncio.wait_for(participants.arrived.get(), 30) for _ in range(4)]
        for _ in range(20):  # checkout got busy while four orders were under way
            intake.try_enter()
        committed = Answer(200, b'{"allocations": []}', {}, "POST", "")
        for path, gate in commits:
            assert path.endswith("/commit")
            gate.set_result(committed)
        # Two of them go on to the payment; the other two wait for room, their leases let go.
        payments = [await asyncio.wait_for(participants.arrived.get(), 30) for _ in range(2)]
        assert all(path == "/v1/payments" for path, _ in payments)
        leased = await pool.fetchval("SELECT count(*) FROM orders WHERE lease_id IS NOT NULL")
        waiting = await pool.fetchval(
            "SELECT count(*) FROM orders WHERE step = 'authorize_payment' AND lease_id IS NULL"
        )
        assert (leased, waiting) == (2, 2)
        for _, gate in payments:
            fail(gate)
    finally:
        stop.set()
        await running


async def test_behind_a_backlog_an_order_that_made_a_step_goes_before_those_placed_after_it(
    pool: asyncpg.Pool, clock: ManualClock
) -> None:
    async def claim_one() -> tuple[str, str]:
        async with pool.acquire() as conn, conn.transaction():
            (claimed,) = await service.claim_due(conn, clock, LEASE, 1)
        return claimed.order.order_id, claimed.step

    first = await place(pool, clock, customer="c-1")
    clock.advance(timedelta(seconds=1))
    second = await place(pool, clock, customer="c-2")
    clock.advance(timedelta(seconds=1))
    async with pool.acquire() as conn, conn.transaction():
        (commit,) = await service.claim_due(conn, clock, LEASE, 1)
    assert commit.order.order_id == first
    clock.advance(timedelta(seconds=1))
    await record(pool, clock, commit, saga.Done())  # its next step follows at once
    async with pool.acquire() as conn:
        (report,) = [
            s
            for s in await service.stuck_orders(conn, clock, timedelta(0))
            if s["order_id"] == first
        ]
    assert report["next_attempt_at"] == (T0 + timedelta(seconds=3)).isoformat()  # due since then
    clock.advance(timedelta(seconds=1))
    third = await place(pool, clock, customer="c-3")
    clock.advance(timedelta(seconds=1))
    assert [await claim_one() for _ in range(3)] == [
        (first, "authorize_payment"),
        (second, "commit_reservation"),
        (third, "commit_reservation"),
    ]
