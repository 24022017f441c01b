"""The loyalty service on the real database and broker, with a manual clock: orders told through
the orders topic exactly as the orders service publishes them, holds over HTTP as the order saga
asks for them, and the jobs moved by the clock."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

import omnistock.contracts  # noqa: F401 - registers the event types
from omnistock.contracts import loyalty as contract
from omnistock.contracts import orders
from omnistock.loyalty import repository
from omnistock.loyalty.api import build_app
from omnistock.loyalty.settings import LoyaltySettings
from omnistock.platform import db, events, kafka
from omnistock.platform.clock import ManualClock
from omnistock.platform.settings import Settings
from tests.integration.conftest import (
    bearer,
    create_service_schema,
    drop_schema,
    end_offsets,
    read_topic_to_end,
    served,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration

T0 = datetime(2026, 5, 4, 9, tzinfo=UTC)
STAFF = ["loyalty:read", "loyalty:redeem"]
CHANNEL = "house-pl"


# -- the orders topic, written as the orders service writes it --


@dataclass
class OrderStream:
    """One order's events, each a new version keyed by the order id."""

    producer: Producer
    customer_id: str
    channel_id: str = CHANNEL
    order_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    version: int = 0
    sent: list[bytes] = field(default_factory=list)

    async def publish(self, payload: Any, at: datetime) -> bytes:
        _, body = events.encode(
            payload,
            source="orders",
            subject=self.order_id,
            time=at,
            aggregate_version=self.version,
            correlation_id=self.order_id,
        )
        await self.send(body)
        self.sent.append(body)
        return body

    async def send(self, body: bytes) -> None:
        """Bytes onto the topic as they are: sending the same bytes again is a redelivery."""
        headers: list[tuple[str, str | bytes | None]] = [
            ("content-type", events.CONTENT_TYPE.encode())
        ]
        self.producer.produce(orders.ORDERS.name, key=self.order_id, value=body, headers=headers)
        remaining = await asyncio.to_thread(self.producer.flush, 30)
        assert remaining == 0, "Kafka did not acknowledge the event"

    async def placed(
        self,
        lines: list[tuple[str, int, int]],
        at: datetime,
        method: str = "card",
        loyalty_points: int = 0,
    ) -> bytes:
        self.version += 1
        order_lines = [orders.OrderLine(sku, quantity, price) for sku, quantity, price in lines]
        return await self.publish(
            orders.OrderPlaced(
                order_id=self.order_id,
                customer_id=self.customer_id,
                channel_id=self.channel_id,
                platform="web",
                version=self.version,
                status="placed",
                reservation_id=str(uuid.uuid4()),
                currency="PLN",
                total=sum(x.quantity * x.unit_price for x in order_lines),
                lines=order_lines,
                delivery="home",
                payment_method=method,
                loyalty_points=loyalty_points,
            ),
            at,
        )

    async def moved(
        self, status: str, previous: str, at: datetime, reason: str | None = None
    ) -> bytes:
        self.version += 1
        return await self.publish(
            orders.OrderStatusChanged(
                order_id=self.order_id,
                customer_id=self.customer_id,
                version=self.version,
                status=status,
                previous_status=previous,
                reason=reason,
                step=None,
            ),
            at,
        )

    async def returned(
        self,
        return_id: str,
        kind: str,
        status: str,
        items: list[tuple[str, int]],
        at: datetime,
        refund: int = 0,
    ) -> bytes:
        self.version += 1
        return await self.publish(
            orders.ReturnUpdated(
                order_id=self.order_id,
                customer_id=self.customer_id,
                version=self.version,
                return_id=return_id,
                kind=kind,
                status=status,
                refund_amount=refund,
                items=[orders.ItemCount(sku, quantity) for sku, quantity in items],
            ),
            at,
        )

    async def through_to(self, status: str, at: datetime) -> None:
        """The statuses a delivered card order goes through, up to ``status``."""
        path = ["placed", "allocated", "authorized", "confirmed", "shipped", "delivered"]
        path += ["in_trial"] if status == "in_trial" else []
        path += ["completed"] if status == "completed" else []
        for previous, current in itertools.pairwise(path):
            await self.moved(current, previous, at)
            if current == status:
                return


def start_group_at_end(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The group reads only what is published from now on: the shared orders topic holds
    every other test's and benchmark's orders, which this schema has no use for."""
    offsets = end_offsets(settings, topic)
    commit_group_at(settings, group, topic, offsets)
    return offsets


# -- the service --


@dataclass
class Loyalty:
    settings: Settings
    schema: str
    clock: ManualClock
    client: httpx.AsyncClient
    look: asyncpg.Pool
    producer: Producer
    own: LoyaltySettings
    app: Any

    def order(self, customer_id: str, channel_id: str = CHANNEL) -> OrderStream:
        return OrderStream(self.producer, customer_id, channel_id)

    def as_customer(self, customer_id: str) -> dict[str, str]:
        return bearer(self.settings, customer_id, ["customer"])

    async def order_version(self, order_id: str) -> int:
        version = await self.look.fetchval(
            "SELECT order_version FROM purchases WHERE order_id = $1", order_id
        )
        return int(version or 0)

    async def caught_up(self, stream: OrderStream) -> None:
        """Until the consumer has applied the order's last event."""

        async def applied() -> bool:
            return await self.order_version(stream.order_id) >= stream.version

        await wait_for(applied, 60, what=f"order {stream.order_id} v{stream.version} applied")

    async def member(self, customer_id: str, channel_id: str = CHANNEL) -> dict[str, Any]:
        brand, _, market = channel_id.rpartition("-")
        found = await self.client.get("/v1/members", params={"customer_id": customer_id})
        assert found.status_code == 200, found.text
        for member in found.json()["members"]:
            if (member["brand_group"], member["market"]) == (brand, market):
                return dict(member)
        raise AssertionError(f"{customer_id} has no account in {channel_id}")

    async def ledger(self, member_id: str) -> list[dict[str, Any]]:
        answer = await self.client.get(f"/v1/members/{member_id}/ledger")
        assert answer.status_code == 200, answer.text
        return list(answer.json()["entries"])

    async def balance_reaches(self, customer_id: str, balance: int) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            member = await self.member(customer_id)
            return member if member["balance"] == balance else None

        found: dict[str, Any] = await wait_for(reached, 30, what=f"a balance of {balance}")
        return found

    async def settled_jobs(self) -> None:
        """Long enough for the jobs (every 20 ms here) to have looked several times."""
        await asyncio.sleep(0.3)

    async def earn(self, customer_id: str, value: int, channel_id: str = CHANNEL) -> OrderStream:
        """An order worth ``value`` placed, completed and past its return window: through the
        orders topic and the clock, as in production."""
        stream = self.order(customer_id, channel_id)
        await stream.placed([(unique("SKU"), 1, value)], self.clock.now())
        await stream.through_to("completed", self.clock.now())
        await self.caught_up(stream)
        self.clock.advance(timedelta(days=self.own.return_window_days))

        async def earned() -> bool:
            status = await self.look.fetchval(
                "SELECT status FROM purchases WHERE order_id = $1", stream.order_id
            )
            return bool(status == "earned")

        await wait_for(earned, 30, what="the order to earn")
        return stream

    async def drained(self) -> None:
        """Until the relay has published every event of the outbox."""

        async def empty() -> bool:
            return bool(await self.look.fetchval("SELECT count(*) FROM outbox") == 0)

        await wait_for(empty, 30, what="the outbox to drain")


def keyed(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {**(headers or {}), "Idempotency-Key": unique("key")}


@asynccontextmanager
async def loyalty_service(
    settings: Settings, schema: str, clock: ManualClock, group: Group, **own: Any
) -> AsyncIterator[Loyalty]:
    settings_ = LoyaltySettings(orders_group=group.name, job_interval_s=0.02, **own)
    app = build_app(settings, clock, schema=schema, own=settings_)
    look = await db.create_pool(settings.database_url, schema, min_size=1, max_size=4)
    producer = kafka.create_producer(settings)
    try:
        async with served(app, bearer(settings, "orders-saga", STAFF)) as client:
            yield Loyalty(settings, schema, clock, client, look, producer, settings_, app)
    finally:
        await look.close()
        await asyncio.to_thread(producer.flush, 10)


@asynccontextmanager
async def loyalty_schema(settings: Settings) -> AsyncIterator[str]:
    """A fresh schema with the service's tables, and the topics (which nothing else creates
    when the tests run on a fresh broker)."""
    await asyncio.to_thread(
        kafka.ensure_topics, settings, [orders.ORDERS, *orders.TOPICS, *contract.TOPICS]
    )
    schema = await create_service_schema(settings, "loyalty", "omnistock.loyalty")
    try:
        yield schema
    finally:
        await drop_schema(settings, schema)


@pytest.fixture
async def schema(settings: Settings) -> AsyncIterator[str]:
    async with loyalty_schema(settings) as schema:
        yield schema


@dataclass(frozen=True)
class Group:
    """The test's consumer group on the orders topic, and where it started reading."""

    name: str
    start: dict[int, int]


def new_group(settings: Settings) -> Group:
    name = unique("loyalty-orders")
    return Group(name, start_group_at_end(settings, name, orders.ORDERS.name))


@pytest.fixture
def group(settings: Settings) -> Group:
    return new_group(settings)


def commit_group_at(settings: Settings, group: str, topic: str, offsets: dict[int, int]) -> None:
    consumer = Consumer(kafka.consumer_config(settings, group))
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


async def group_reaches(settings: Settings, group: str, topic: str, ends: dict[int, int]) -> None:
    """Until the group has committed offsets up to ``ends``: everything before is applied."""

    def committed() -> bool:
        consumer = Consumer(kafka.consumer_config(settings, group))
        try:
            found = consumer.committed([TopicPartition(topic, p) for p in ends], timeout=10)
        finally:
            consumer.close()
        return all(tp.offset >= ends[tp.partition] for tp in found)

    async def reached() -> bool:
        return await asyncio.to_thread(committed)

    await wait_for(reached, 120, what=f"{group} to commit up to {ends}")


@pytest.fixture
async def service(settings: Settings, schema: str, group: Group) -> AsyncIterator[Loyalty]:
    async with loyalty_service(settings, schema, ManualClock(T0), group) as running:
        yield running


def member_events(
    settings: Settings, member_id: str, start: dict[int, int]
) -> list[events.Event[Any]]:
    found = []
    for message in read_topic_to_end(settings, contract.MEMBERS.name, start=start):
        if message.key() == member_id.encode():
            event = events.decode(message.value())
            assert event is not None
            found.append(event)
    return found


# -- earning --


async def test_a_try_before_you_buy_order_earns_only_for_its_kept_lines_after_the_window(
    settings: Settings, service: Loyalty
) -> None:
    topic_start = end_offsets(settings, contract.MEMBERS.name)
    customer = unique("ivy")
    stream = service.order(customer)
    now = service.clock.now
    await stream.placed(
        [("COAT", 1, 19_990), ("DRESS", 2, 8_000), ("SCARF", 1, 2_500)],
        now(),
        method="try_before_you_buy",
    )
    await stream.through_to("in_trial", now())
    # The customer sends back both dresses and the scarf; the return is announced three times
    # as it is requested, received and settled, and counts once.
    trial = str(uuid.uuid4())
    sent_back = [("DRESS", 2), ("SCARF", 1)]
    for status in ("requested", "received", "settled"):
        await stream.returned(trial, "trial", status, sent_back, now())
    await stream.moved("completed", "in_trial", now())
    await service.caught_up(stream)

    member = await service.member(customer)
    assert (member["balance"], member["orders_waiting_to_earn"]) == (0, 1)
    # A day before the return window passes: nothing yet.
    service.clock.advance(timedelta(days=29))
    await service.settled_jobs()
    assert (await service.member(customer))["balance"] == 0
    service.clock.advance(timedelta(days=1))
    member = await service.balance_reaches(customer, 199)  # 199.90 PLN kept, 1 point a złoty
    assert member["orders_waiting_to_earn"] == 0
    (entry,) = await service.ledger(member["member_id"])
    assert (entry["kind"], entry["points"], entry["order_id"]) == ("earn", 199, stream.order_id)
    assert entry["details"]["kept_value"] == 19_990
    assert entry["details"]["multiplier_percent"] == 100

    await service.drained()
    published = member_events(settings, member["member_id"], topic_start)
    assert [(e.type, e.aggregate_version) for e in published] == [(contract.PointsEarned.TYPE, 1)]
    earned = published[0]
    assert (earned.subject, earned.correlation_id) == (member["member_id"], stream.order_id)
    assert (earned.data.points, earned.data.balance, earned.data.kept_value) == (199, 199, 19_990)


async def test_a_return_lowers_the_coming_earning_or_takes_back_points_already_earned(
    service: Loyalty,
) -> None:
    customer = unique("joy")
    now = service.clock.now
    # Returned within the window, before the order earned: it earns for the coat only.
    before = service.order(customer)
    await before.placed([("COAT", 1, 10_000), ("BAG", 1, 6_000)], now())
    await before.through_to("completed", now())
    await before.returned(str(uuid.uuid4()), "rma", "requested", [("BAG", 1)], now(), 6_000)
    await service.caught_up(before)
    # Returned after it earned (the orders service's window may be longer than this one).
    after = service.order(customer)
    await after.placed([("SHOE", 2, 5_000)], now())
    await after.through_to("completed", now())
    await service.caught_up(after)
    service.clock.advance(timedelta(days=30))
    member = await service.balance_reaches(customer, 200)
    rma = str(uuid.uuid4())
    await after.returned(rma, "rma", "requested", [("SHOE", 1)], now(), 5_000)
    await after.returned(rma, "rma", "received", [("SHOE", 1)], now(), 5_000)
    await service.caught_up(after)
    member = await service.balance_reaches(customer, 150)
    entries = await service.ledger(member["member_id"])
    assert [(e["kind"], e["points"], e["order_id"]) for e in entries[:1]] == [
        ("reverse", 50, after.order_id)
    ]
    assert entries[0]["details"] == {"return_id": rma, "unrecovered": 0}
    earned = sorted((e["order_id"], e["points"]) for e in entries if e["kind"] == "earn")
    assert earned == sorted([(before.order_id, 100), (after.order_id, 100)])


async def test_tiers_follow_the_last_12_months_and_unspent_points_expire(
    settings: Settings, schema: str, group: Group
) -> None:
    topic_start = end_offsets(settings, contract.MEMBERS.name)
    rule = {
        "tiers": [
            {"name": "member", "from_points": 0, "multiplier_percent": 100},
            {"name": "silver", "from_points": 100, "multiplier_percent": 150},
        ]
    }
    clock = ManualClock(T0)
    async with loyalty_service(
        settings, schema, clock, group, default_rule=rule, points_valid_months=18
    ) as service:
        customer = unique("kim")
        await service.earn(customer, 12_000)  # 120 points: silver from now on
        member = await service.balance_reaches(customer, 120)
        assert (member["tier"], member["qualifying_points"]) == ("silver", 120)
        await service.earn(customer, 10_000)  # at silver: 150 points for 100 qualifying
        member = await service.balance_reaches(customer, 270)
        assert member["qualifying_points"] == 220
        # Twelve months after the first earning it no longer counts, but the second one does.
        first_earned = T0 + timedelta(days=30)
        clock.set(first_earned + timedelta(days=366))
        await service.settled_jobs()
        assert (await service.member(customer))["tier"] == "silver"
        clock.set(first_earned + timedelta(days=60 + 366))

        async def fell() -> bool:
            return bool((await service.member(customer))["tier"] == "member")

        await wait_for(fell, 30, what="the tier to fall")
        # Eighteen months after each earning its points expire, as far as they are unspent.
        hold = await service.client.post(
            "/v1/holds",
            json={
                "order_id": unique("order"),
                "customer_id": customer,
                "channel_id": CHANNEL,
                "points": 100,
            },
            headers=keyed(),
        )
        assert hold.status_code == 201, hold.text
        # 18 months after the first earning (~548 days), before the second's (~579).
        clock.set(first_earned + timedelta(days=560))
        member = await service.balance_reaches(customer, 150)  # 120 - 100 spent: 20 expired
        clock.set(first_earned + timedelta(days=700))
        member = await service.balance_reaches(customer, 0)  # the second earning's 150
        assert member["held"] == 100
        kinds = [
            (e["kind"], e["points"]) for e in reversed(await service.ledger(member["member_id"]))
        ]
        assert kinds == [
            ("earn", 120),
            ("earn", 150),
            ("hold", 100),
            ("expire", 20),
            ("expire", 150),
        ]

        await service.drained()
        published = member_events(settings, member["member_id"], topic_start)
        assert [e.aggregate_version for e in published] == list(range(1, len(published) + 1))
        tiers = [
            (e.data.previous_tier, e.data.tier)
            for e in published
            if isinstance(e.data, contract.TierChanged)
        ]
        assert tiers == [("member", "silver"), ("silver", "member")]
        assert sum(isinstance(e.data, contract.PointsExpired) for e in published) == 2


# -- holds --


def hold_body(customer: str, points: int, order_id: str | None = None) -> dict[str, Any]:
    return {
        "order_id": order_id or str(uuid.uuid4()),
        "customer_id": customer,
        "channel_id": CHANNEL,
        "points": points,
    }


async def test_a_cancelled_order_releases_its_held_points(
    settings: Settings, service: Loyalty
) -> None:
    customer = unique("lea")
    await service.earn(customer, 50_000)
    member = await service.balance_reaches(customer, 500)
    topic_start = end_offsets(settings, contract.MEMBERS.name)
    now = service.clock.now
    # The order asks to redeem 300 points; the saga holds them, then the order is cancelled.
    order = service.order(customer)
    await order.placed([("COAT", 1, 30_000)], now(), loyalty_points=300)
    held = await service.client.post(
        "/v1/holds", json=hold_body(customer, 300, order.order_id), headers=keyed()
    )
    assert held.status_code == 201, held.text
    assert (held.json()["status"], held.json()["member_id"]) == ("held", member["member_id"])
    member = await service.member(customer)
    assert (member["balance"], member["held"]) == (200, 300)
    await order.moved("cancelling", "placed", now(), reason="payment_declined")
    await order.moved("cancelled", "cancelling", now(), reason="payment_declined")
    await service.caught_up(order)
    member = await service.balance_reaches(customer, 500)
    assert member["held"] == 0
    # The saga's own release comes after: it finds the hold released and changes nothing.
    release = await service.client.post(f"/v1/holds/{order.order_id}/release", headers=keyed())
    assert (release.status_code, release.json()["status"]) == (200, "released")
    commit = await service.client.post(f"/v1/holds/{order.order_id}/commit", headers=keyed())
    assert commit.status_code == 409
    assert commit.json()["errors"] == [{"field": "status", "message": "is released"}]
    after = await service.member(customer)
    assert (after["balance"], after["held"], after["version"]) == (500, 0, member["version"])

    await service.drained()
    published = member_events(settings, member["member_id"], topic_start)
    assert [type(e.data) for e in published] == [contract.PointsHeld, contract.PointsReleased]
    assert [e.aggregate_version for e in published] == [2, 3]
    assert {e.correlation_id for e in published} == {order.order_id}


async def test_holds_are_once_per_order_and_commit_and_release_are_safe_to_repeat(
    service: Loyalty,
) -> None:
    customer = unique("max")
    await service.earn(customer, 10_000)
    await service.balance_reaches(customer, 100)
    body = hold_body(customer, 60)
    order_id = body["order_id"]
    key = keyed()
    first = await service.client.post("/v1/holds", json=body, headers=key)
    assert first.status_code == 201, first.text
    replay = await service.client.post("/v1/holds", json=body, headers=key)
    assert (replay.status_code, replay.headers["Idempotent-Replayed"]) == (201, "true")
    # Another key, the same order: the hold as it is, nothing held twice.
    again = await service.client.post("/v1/holds", json=body, headers=keyed())
    assert again.status_code == 200
    assert again.json()["points"] == 60
    other_points = await service.client.post(
        "/v1/holds", json={**body, "points": 10}, headers=keyed()
    )
    assert other_points.status_code == 409
    assert other_points.json()["errors"][0]["field"] == "points"
    short = await service.client.post("/v1/holds", json=hold_body(customer, 41), headers=keyed())
    assert short.status_code == 409
    assert short.headers["content-type"] == "application/problem+json"
    problem = short.json()
    assert (problem["type"], problem["available"]) == (
        "urn:omnistock:problem:insufficient-points",
        40,
    )
    assert problem["errors"] == [{"field": "points", "message": "at most 40 available"}]
    stranger = await service.client.post(
        "/v1/holds", json=hold_body(unique("nobody"), 1), headers=keyed()
    )
    assert stranger.status_code == 409
    assert stranger.json()["errors"][0]["field"] == "points"

    for _ in range(2):
        commit = await service.client.post(f"/v1/holds/{order_id}/commit", headers=keyed())
        assert (commit.status_code, commit.json()["status"]) == (200, "committed")
    release = await service.client.post(f"/v1/holds/{order_id}/release", headers=keyed())
    assert release.status_code == 409
    assert release.json()["errors"] == [{"field": "status", "message": "is committed"}]
    member = await service.member(customer)
    assert (member["balance"], member["held"]) == (40, 0)
    kinds = [e["kind"] for e in reversed(await service.ledger(member["member_id"]))]
    assert kinds == ["earn", "hold", "commit"]

    # A release before any hold (the saga gave up waiting for its answer) closes the order.
    late = str(uuid.uuid4())
    closed = await service.client.post(f"/v1/holds/{late}/release", headers=keyed())
    assert (closed.status_code, closed.json()["status"], closed.json()["points"]) == (
        200,
        "released",
        0,
    )
    refused = await service.client.post(
        "/v1/holds", json=hold_body(customer, 10, late), headers=keyed()
    )
    assert refused.status_code == 409
    assert refused.json()["errors"][0]["field"] == "order_id"
    unknown = await service.client.post(f"/v1/holds/{uuid.uuid4()}/commit", headers=keyed())
    assert unknown.status_code == 404
    assert (await service.member(customer))["balance"] == 40


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"points": 0}, "points"),
        ({"points": -3}, "points"),
        ({"points": 1.5}, "points"),
        ({"points": "12"}, "points"),
        ({"points": 10**13}, "points"),
        ({"channel_id": "House PL"}, "channel_id"),
        ({"channel_id": "nomarket"}, "channel_id"),
        ({"customer_id": ""}, "customer_id"),
        ({"order_id": None}, "order_id"),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_field_and_holds_nothing(
    service: Loyalty, change: dict[str, Any], field: str
) -> None:
    body = {**hold_body("someone", 10), **change}
    answer = await service.client.post("/v1/holds", json=body, headers=keyed())
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in answer.json()["errors"]]
    assert await service.look.fetchval("SELECT count(*) FROM holds") == 0


async def test_writes_without_an_idempotency_key_and_bad_paths_are_refused(
    service: Loyalty,
) -> None:
    answer = await service.client.post("/v1/holds", json=hold_body("someone", 10))
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == "header.Idempotency-Key"
    answer = await service.client.post("/v1/holds/x/release")
    assert answer.status_code == 400
    answer = await service.client.get("/v1/members/not-a-uuid")
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "path.member_id"
    answer = await service.client.get("/v1/members")
    assert answer.json()["errors"][0]["field"] == "query.customer_id"
    assert await service.look.fetchval("SELECT count(*) FROM holds") == 0


# -- customers --

ENDPOINTS: dict[tuple[str, str], Callable[[str], dict[str, Any] | None]] = {
    ("POST", "/v1/holds"): lambda customer: hold_body(customer, 1),
    ("GET", "/v1/holds/{order_id}"): lambda _: None,
    ("POST", "/v1/holds/{order_id}/commit"): lambda _: None,
    ("POST", "/v1/holds/{order_id}/release"): lambda _: None,
    ("GET", "/v1/members"): lambda _: None,
    ("GET", "/v1/members/{member_id}"): lambda _: None,
    ("GET", "/v1/members/{member_id}/ledger"): lambda _: None,
}


async def test_a_customer_sees_only_its_own_account_and_holds_on_every_endpoint(
    settings: Settings, service: Loyalty
) -> None:
    paths = build_app(settings, own=service.own).openapi()["paths"]
    routes = {(method.upper(), path) for path, operations in paths.items() for method in operations}
    # A new endpoint must be added here, so that it is checked too.
    assert routes == set(ENDPOINTS)
    ivy, mallory = unique("ivy"), unique("mallory")
    await service.earn(ivy, 10_000)
    await service.earn(mallory, 20_000)
    member = await service.balance_reaches(ivy, 100)
    order_id = str(uuid.uuid4())
    held = await service.client.post(
        "/v1/holds", json=hold_body(ivy, 30, order_id), headers=keyed()
    )
    assert held.status_code == 201, held.text
    before = await service.member(ivy)

    as_ivy, as_mallory = service.as_customer(ivy), service.as_customer(mallory)
    for (method, template), body in ENDPOINTS.items():
        path = template.format(order_id=order_id, member_id=member["member_id"])
        params = {"customer_id": ivy} if template == "/v1/members" else None
        answer = await service.client.request(
            method, path, json=body(mallory), params=params, headers=keyed(as_mallory)
        )
        # Reads: someone else's does not exist (404; a list naming them: 403); writes are
        # the saga's alone (403), even for oneself.
        expected = 404 if method == "GET" and "{" in template else 403
        assert answer.status_code == expected, (method, template, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        if method == "POST":
            own = await service.client.request(method, path, json=body(ivy), headers=keyed(as_ivy))
            assert own.status_code == 403, (method, template, own.text)

    mine = await service.client.get(f"/v1/members/{member['member_id']}", headers=as_ivy)
    assert (mine.status_code, mine.json()["balance"], mine.json()["held"]) == (200, 70, 30)
    ledger = await service.client.get(f"/v1/members/{member['member_id']}/ledger", headers=as_ivy)
    assert [e["kind"] for e in ledger.json()["entries"]] == ["hold", "earn"]
    hold = await service.client.get(f"/v1/holds/{order_id}", headers=as_ivy)
    assert (hold.status_code, hold.json()["status"]) == (200, "held")
    listed = await service.client.get("/v1/members", headers=as_mallory)
    assert [m["customer_id"] for m in listed.json()["members"]] == [mallory]
    after = await service.member(ivy)
    assert (after["version"], after["balance"], after["held"]) == (
        before["version"],
        70,
        30,
    )


# -- redelivery --


async def test_a_redelivered_event_changes_nothing(
    settings: Settings, schema: str, group: Group
) -> None:
    clock = ManualClock(T0)
    async with loyalty_service(settings, schema, clock, group) as service:
        customer = unique("ned")
        earlier = await service.earn(customer, 8_000)
        now = clock.now
        stream = service.order(customer)
        placed = await stream.placed(
            [("COAT", 1, 10_000), ("HAT", 1, 3_000)], now(), loyalty_points=20
        )
        held = await service.client.post(
            "/v1/holds", json=hold_body(customer, 20, stream.order_id), headers=keyed()
        )
        assert held.status_code == 201, held.text
        await stream.through_to("delivered", now())
        rma_before = str(uuid.uuid4())
        completed = await stream.moved("completed", "delivered", now())
        returned = await stream.returned(rma_before, "rma", "requested", [("HAT", 1)], now(), 3_000)
        await service.caught_up(stream)
        clock.advance(timedelta(days=30))
        member = await service.balance_reaches(customer, 80 - 20 + 100)
        rma_after = str(uuid.uuid4())
        reversed_ = await stream.returned(
            rma_after, "rma", "requested", [("COAT", 1)], now(), 10_000
        )
        member = await service.balance_reaches(customer, 60)
        await service.drained()
        snapshot = await state_of(service, member["member_id"])

        # The relay publishes again what it published before a crash: the same event ids.
        for body in (*earlier.sent, placed, completed, returned, reversed_):
            await stream.send(body)
        await stream.returned(rma_after, "rma", "received", [("COAT", 1)], now(), 10_000)
        await service.caught_up(stream)
        await service.settled_jobs()
        assert await state_of(service, member["member_id"]) == snapshot

    # The consumer crashes before it commits its offsets: everything comes again.
    await asyncio.to_thread(commit_group_at, settings, group.name, orders.ORDERS.name, group.start)
    async with loyalty_service(settings, schema, clock, group) as service:
        ends = await asyncio.to_thread(end_offsets, settings, orders.ORDERS.name)
        await group_reaches(settings, group.name, orders.ORDERS.name, ends)
        await service.settled_jobs()
        assert await state_of(service, member["member_id"]) == snapshot


async def state_of(service: Loyalty, member_id: str) -> dict[str, Any]:
    """Everything the member's orders and holds could have changed."""
    member = await service.look.fetchrow("SELECT * FROM members WHERE member_id = $1", member_id)
    assert member is not None
    purchases = await service.look.fetch(
        """SELECT p.*, array_agg(l.returned ORDER BY l.line) AS returned
           FROM purchases p JOIN purchase_lines l USING (order_id)
           WHERE member_id = $1 GROUP BY p.order_id ORDER BY p.order_id""",
        member_id,
    )
    return {
        "member": dict(member),
        "ledger": [
            dict(r)
            for r in await service.look.fetch(
                "SELECT * FROM ledger WHERE member_id = $1 ORDER BY version", member_id
            )
        ],
        "holds": [
            dict(r)
            for r in await service.look.fetch(
                "SELECT * FROM holds WHERE member_id = $1 ORDER BY order_id", member_id
            )
        ],
        "purchases": [
            {k: v for k, v in dict(r).items() if k != "order_version"} for r in purchases
        ],
        # The member's own: orders of other tests share the topic and this schema's tables.
        "returns": await service.look.fetchval(
            """SELECT count(*) FROM purchase_returns JOIN purchases USING (order_id)
               WHERE member_id = $1""",
            member_id,
        ),
        "outbox": await service.look.fetchval("SELECT count(*) FROM outbox"),
    }


# -- optimistic concurrency --


async def test_two_writers_of_one_account_version_conflict(service: Loyalty) -> None:
    customer = unique("oli")
    await service.earn(customer, 10_000)
    member = await service.balance_reaches(customer, 100)
    async with service.look.acquire() as first, service.look.acquire() as second:
        one = await repository.load_member(first, member["member_id"])
        two = await repository.load_member(second, member["member_id"])
        assert one is not None
        assert two is not None
        version = one.version
        one.hold("order-1", 10, service.clock.now())
        two.hold("order-2", 95, service.clock.now())
        await repository.update_member(first, one, version, service.clock.now())
        with pytest.raises(repository.ConcurrentUpdate):
            await repository.update_member(second, two, version, service.clock.now())
    after = await service.member(customer)
    assert (after["balance"], after["held"], after["version"]) == (90, 10, version + 1)
