"""customer-sync on real Kafka and PostgreSQL: the same view from events in order and from the
same events shuffled and repeated; a replay from the start of the topics rebuilds an identical
view and sends no notification twice; a customer reads only its own timeline."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from omnistock.customer_sync import rebuild, repository
from omnistock.customer_sync.api import build_app
from omnistock.customer_sync.notifications import Notification
from omnistock.customer_sync.settings import CustomerSyncSettings
from omnistock.platform import db, events, kafka
from omnistock.platform.settings import Settings
from tests.customer_sync_story import Written, order_story
from tests.integration.conftest import (
    bearer,
    create_service_schema,
    drop_schema,
    served,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration

ORDERS = 6
# The order, its payment, two shipments, one return, the points account, the locker parcel.
ENTRIES_PER_ORDER = 7
NOTICES_PER_ORDER = 5  # confirmed, shipped, ready for pickup, trial ending, refund made


@dataclass
class RecordingSender:
    sent: list[Notification] = field(default_factory=list)

    async def send(self, notification: Notification) -> None:
        self.sent.append(notification)


@dataclass
class Instance:
    """A customer-sync service reading its own pair of topics into its own schema."""

    settings: Settings
    schema: str
    own: CustomerSyncSettings
    sender: RecordingSender

    def app(self) -> Any:
        return build_app(self.settings, schema=self.schema, own=self.own, sender=self.sender)


@pytest.fixture
async def instances(settings: Settings) -> AsyncIterator[tuple[Instance, Instance]]:
    made = []
    for _ in range(2):
        topics = [
            unique(f"test.{name}") for name in ("orders", "payments", "members", "parcels", "codes")
        ]
        own = CustomerSyncSettings(group=unique("test.sync"), topics=topics, sender_interval_s=0.05)
        await asyncio.to_thread(
            kafka.ensure_topics,
            settings,
            [
                *(kafka.TopicSpec(t, partitions=3) for t in topics),
                kafka.TopicSpec(kafka.dead_letter_topic(own.group), partitions=1),
            ],
        )
        schema = await create_service_schema(settings, "customer-sync", "omnistock.customer_sync")
        made.append(Instance(settings, schema, own, RecordingSender()))
    try:
        yield made[0], made[1]
    finally:
        for instance in made:
            await drop_schema(settings, instance.schema)
            await asyncio.to_thread(
                kafka.delete_topics,
                settings,
                [*instance.own.topics, kafka.dead_letter_topic(instance.own.group)],
            )


def publish(settings: Settings, topics: list[str], written: list[Written]) -> None:
    """As the outbox relays do: each event keyed by its aggregate, with its id (a repeat keeps
    it), each to this instance's stand-in for its contract's topic."""
    standing_in = dict(zip(CustomerSyncSettings().topics, topics, strict=True))
    producer = kafka.create_producer(settings)
    for w in written:
        _, value = events.encode(
            w.payload,
            source="test",
            subject=w.key,
            time=w.time,
            aggregate_version=w.version,
            event_id=w.event_id,
        )
        producer.produce(standing_in[w.payload.TOPIC], key=w.key.encode(), value=value)
    assert producer.flush(30) == 0


def stories() -> list[list[Written]]:
    return [order_story(unique("order"), unique("pay"), f"customer-{n % 3}") for n in range(ORDERS)]


async def digest_of(instance: Instance) -> tuple[str, int]:
    conn = await db.connect(instance.settings.database_url, instance.schema)
    try:
        return await repository.digest(conn)
    finally:
        await conn.close()


async def caught_up(instance: Instance) -> tuple[str, int]:
    async def complete() -> tuple[str, int] | None:
        found = await digest_of(instance)
        return found if found[1] == ORDERS * ENTRIES_PER_ORDER else None

    return await wait_for(complete, 60, what="the whole view")


async def all_sent(sender: RecordingSender) -> None:
    async def done() -> bool:
        return len(sender.sent) >= ORDERS * NOTICES_PER_ORDER

    await wait_for(done, 30, what="every notification")


async def test_shuffled_repeated_and_replayed_events_build_the_same_view_and_notify_once(
    settings: Settings, instances: tuple[Instance, Instance]
) -> None:
    in_order, shuffled = instances
    written = stories()
    flat = [w for story in written for w in story]
    chance = random.Random(7)
    mixed = [*flat, *chance.sample(flat, len(flat) // 2)]
    chance.shuffle(mixed)
    await asyncio.to_thread(publish, settings, in_order.own.topics, flat)
    await asyncio.to_thread(publish, settings, shuffled.own.topics, mixed)

    staff = bearer(settings, "support", ["customer-sync:read", "customer-sync:admin"])
    async with served(in_order.app(), staff) as a, served(shuffled.app(), staff) as b:
        expected = await caught_up(in_order)
        assert await caught_up(shuffled) == expected
        for customer in ("customer-0", "customer-1", "customer-2"):
            path = f"/v1/customers/{customer}/timeline"
            one, two = (await a.get(path)).json(), (await b.get(path)).json()
            assert one == two
            assert len(one["orders"]) == 2
            assert {o["status"] for o in one["orders"]} == {"completed"}
        assert (await b.get("/v1/digest")).json() == {"digest": expected[0], "entries": expected[1]}
        await all_sent(shuffled.sender)

    # Replay: the view is dropped and the group rewound, then rebuilt from the topics alone.
    conn = await db.connect(settings.database_url, shuffled.schema)
    try:
        await rebuild.forget(conn, shuffled.own.group)
        assert await conn.fetchval("SELECT count(*) FROM entries") == 0
    finally:
        await conn.close()
    rewound = await asyncio.to_thread(
        rebuild.rewind, settings, shuffled.own.group, shuffled.own.topics
    )
    assert rewound == 5 * 3
    async with served(shuffled.app(), staff):
        assert await caught_up(shuffled) == expected
        await asyncio.sleep(0.3)  # a few sender rounds: nothing new may go out
    keys = [(n.kind, n.order_id, n.details.get("amount")) for n in shuffled.sender.sent]
    assert len(keys) == len(set(keys)) == ORDERS * NOTICES_PER_ORDER
    assert {n.customer_id for n in shuffled.sender.sent} == {
        "customer-0",
        "customer-1",
        "customer-2",
    }


async def test_a_customer_reads_only_its_own_timeline_order_cards_and_notifications(
    settings: Settings, instances: tuple[Instance, Instance]
) -> None:
    instance, _ = instances
    written = stories()
    await asyncio.to_thread(publish, settings, instance.own.topics, [w for s in written for w in s])
    mine = written[0][0].payload.order_id  # customer-0's
    theirs = written[1][0].payload.order_id  # customer-1's
    zero = bearer(settings, "customer-0", ["customer"])
    async with served(instance.app(), zero) as client:
        await caught_up(instance)
        await all_sent(instance.sender)
        own = await client.get("/v1/customers/customer-0/timeline")
        assert own.status_code == 200, own.text
        assert mine in {o["order_id"] for o in own.json()["orders"]}
        assert theirs not in {o["order_id"] for o in own.json()["orders"]}
        card = await client.get(f"/v1/customers/customer-0/orders/{mine}")
        assert (card.status_code, card.json()["payments"][0]["captured"]) == (200, 3_000)
        assert card.json()["parcels"][0]["pickup_code"] == "40418812"
        balances = {a["member_id"]: a["balance"] for a in own.json()["loyalty"]}
        assert balances == {f"{mine}-member": 400, f"{written[3][0].payload.order_id}-member": 400}
        notified = await client.get("/v1/customers/customer-0/notifications")
        assert len(notified.json()["notifications"]) == 2 * NOTICES_PER_ORDER
        for path in (
            "/v1/customers/customer-1/timeline",
            f"/v1/customers/customer-1/orders/{theirs}",
            f"/v1/customers/customer-0/orders/{theirs}",
            "/v1/customers/customer-1/notifications",
        ):
            answer = await client.get(path)
            assert answer.status_code == 404, (path, answer.text)
        assert (await client.get("/v1/digest")).status_code == 403
        paths = instance.app().openapi()["paths"]
        assert set(paths) == {
            "/v1/customers/{customer_id}/timeline",
            "/v1/customers/{customer_id}/orders/{order_id}",
            "/v1/customers/{customer_id}/notifications",
            "/v1/digest",
        }, "a new endpoint needs its isolation check here"
