"""The outbox → Kafka → inbox path against the real broker and database, with real kill -9."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from omnistock.demo import service
from omnistock.platform import kafka
from omnistock.platform.clock import SystemClock
from tests.integration.conftest import (
    Sandbox,
    read_topic,
    start_consumer,
    start_relay,
    wait_for,
)

pytestmark = pytest.mark.integration
clock = SystemClock()


async def send(sandbox: Sandbox, stream: str, count: int, per_transaction: int = 50) -> None:
    for start in range(0, count, per_transaction):
        async with sandbox.pool.acquire() as conn, conn.transaction():
            size = min(per_transaction, count - start)
            await service.send_pings(
                conn, stream, [f"m{start + i}" for i in range(size)], clock, topic=sandbox.topic
            )


async def count(sandbox: Sandbox, sql: str) -> int:
    value: int = await sandbox.pool.fetchval(sql)
    return value


async def wait_count(sandbox: Sandbox, sql: str, expected: int, timeout_s: float = 60) -> None:
    async def reached() -> bool:
        return await count(sandbox, sql) == expected

    await wait_for(reached, timeout_s, what=f"{sql} == {expected}")


async def assert_each_ping_applied_once(sandbox: Sandbox, expected: int) -> None:
    assert await service.unapplied_pings(sandbox.pool) == 0
    assert await count(sandbox, "SELECT count(*) FROM pongs") == expected
    assert await count(sandbox, "SELECT count(*) FROM inbox") == expected


async def test_relay_killed_between_publish_and_mark_duplicates_are_absorbed(
    sandbox: Sandbox, processes
) -> None:
    await send(sandbox, "alpha", 300)
    relay = processes(start_relay(sandbox, faults="relay.after_publish:kill"))
    await asyncio.to_thread(relay.join, 60)
    assert relay.exitcode == -9, "the relay should have been killed right after publishing"
    # Published but not marked: exactly the state a crash at the worst moment leaves.
    assert await count(sandbox, "SELECT count(*) FROM outbox") == 300
    first_pass = len(await asyncio.to_thread(read_topic, sandbox.settings, sandbox.topic))
    assert first_pass == 300

    processes(start_relay(sandbox))
    processes(start_consumer(sandbox))
    await wait_count(sandbox, "SELECT count(*) FROM outbox", 0)
    assert len(await asyncio.to_thread(read_topic, sandbox.settings, sandbox.topic)) == 600
    await wait_count(sandbox, "SELECT count(*) FROM pongs", 300)
    await asyncio.sleep(1.0)  # give duplicates time to arrive: they must change nothing
    await assert_each_ping_applied_once(sandbox, 300)


@pytest.mark.parametrize(
    "fault",
    [
        "consumer.before_commit:kill@3",  # effect committed, offset not: redelivery hits the inbox
        "consumer.mid_batch:kill@2",  # killed inside the transaction: it rolls back
    ],
)
async def test_consumer_killed_mid_batch_resumes_without_loss_or_double_apply(
    sandbox: Sandbox, processes, fault: str
) -> None:
    await send(sandbox, "beta", 3000, per_transaction=100)
    await send(sandbox, "gamma", 2000, per_transaction=100)
    processes(start_relay(sandbox))
    consumer = processes(start_consumer(sandbox, faults=fault))
    await asyncio.to_thread(consumer.join, 90)
    assert consumer.exitcode == -9
    applied_before = await count(sandbox, "SELECT count(*) FROM pongs")
    assert 0 < applied_before < 5000

    processes(start_consumer(sandbox))
    await wait_count(sandbox, "SELECT count(*) FROM pongs", 5000)
    await asyncio.sleep(1.0)
    await assert_each_ping_applied_once(sandbox, 5000)


async def test_consumer_killed_at_random_moments_by_kill_9(sandbox: Sandbox, processes) -> None:
    """Static membership: each restart takes the partitions back at once, no session timeout."""
    rng = random.Random(7)
    total = 20_000
    await send(sandbox, "delta", total, per_transaction=500)
    processes(start_relay(sandbox))
    kills = 0
    while kills < 3:
        consumer = processes(start_consumer(sandbox, instance_id="crash-test-consumer"))
        before = await count(sandbox, "SELECT count(*) FROM pongs")

        async def progressed(before: int = before) -> bool:
            return await count(sandbox, "SELECT count(*) FROM pongs") > before

        await wait_for(progressed, what="some progress")
        await asyncio.sleep(rng.uniform(0.0, 0.05))
        consumer.kill()
        await asyncio.to_thread(consumer.join, 10)
        assert consumer.exitcode == -9
        kills += 1
    assert await count(sandbox, "SELECT count(*) FROM pongs") < total, "no kill landed mid-stream"
    processes(start_consumer(sandbox, instance_id="crash-test-consumer"))
    await wait_count(sandbox, "SELECT count(*) FROM pongs", total)
    await asyncio.sleep(1.0)
    await assert_each_ping_applied_once(sandbox, total)


async def test_malformed_events_go_to_the_dead_letter_topic_and_the_consumer_carries_on(
    sandbox: Sandbox, processes
) -> None:
    from confluent_kafka import Producer

    from omnistock.contracts.demo import PingSent
    from omnistock.platform import events

    producer = Producer({"bootstrap.servers": sandbox.settings.kafka_bootstrap})
    _, bad_schema = events.encode(
        PingSent(ping_id="p", stream="s", sequence=1, message="m", sent_at_ns=0),
        source="/test",
        subject="s",
        time=clock.now(),
        aggregate_version=1,
    )
    bad_schema = bad_schema.replace(b'"sequence":1', b'"sequence":"one"')
    producer.produce(sandbox.topic, key="s", value=b"{not json")
    producer.produce(sandbox.topic, key="s", value=bad_schema)
    producer.flush(10)
    await send(sandbox, "epsilon", 20)
    # The same ping under a second event id: the handler's unique key refuses it every time.
    async with sandbox.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT payload FROM outbox ORDER BY id LIMIT 1")
        first = events.decode(row["payload"])
        assert first is not None
        await conn.execute(
            "INSERT INTO outbox (event_id, topic, message_key, payload) VALUES ($1, $2, $3, $4)",
            events.new_event_id(),
            sandbox.topic,
            "epsilon",
            events.encode(
                first.data, source="/test", subject="epsilon", time=clock.now(), aggregate_version=1
            )[1],
        )
    await send(sandbox, "epsilon", 20)

    processes(start_relay(sandbox))
    consumer = processes(start_consumer(sandbox))
    await wait_count(sandbox, "SELECT count(*) FROM pongs", 40)

    async def three_dead_letters() -> list[Any] | None:
        parked = await asyncio.to_thread(read_topic, sandbox.settings, sandbox.dead_letter_topic, 2)
        return parked if len(parked) >= 3 else None

    dead = await wait_for(three_dead_letters, what="three dead letters")
    reasons = sorted(dict(m.headers())["dlq.reason"].decode() for m in dead)
    assert len(dead) == 3
    assert any("invalid CloudEvents envelope" in r for r in reasons)
    assert any("payload does not match its schema" in r and "sequence" in r for r in reasons)
    assert any("handler failed" in r and "UniqueViolation" in r for r in reasons)
    assert consumer.is_alive()
    await assert_each_ping_applied_once(sandbox, 40)


async def test_events_with_the_same_key_arrive_in_order(sandbox: Sandbox, processes) -> None:
    streams = [f"s{n}" for n in range(12)]

    async def writer(stream: str) -> None:
        for _ in range(20):
            async with sandbox.pool.acquire() as conn, conn.transaction():
                await service.send_pings(conn, stream, ["a", "b", "c"], clock, topic=sandbox.topic)

    processes(start_relay(sandbox))
    processes(start_consumer(sandbox))
    await asyncio.gather(*(writer(stream) for stream in streams))
    total = len(streams) * 60
    await wait_count(sandbox, "SELECT count(*) FROM pongs", total)
    for stream in streams:
        sequences = [
            r["sequence"]
            for r in await sandbox.pool.fetch(
                "SELECT sequence FROM pongs WHERE stream = $1 ORDER BY applied_order", stream
            )
        ]
        assert sequences == list(range(1, 61)), f"{stream} arrived out of order"


async def test_the_inbox_forgets_ids_only_after_their_retention(sandbox: Sandbox) -> None:
    from omnistock.platform.runtime import prune_older_than

    await sandbox.pool.execute(
        """INSERT INTO inbox (group_id, event_id, processed_at)
           SELECT 1, gen_random_uuid(), now() - make_interval(days => d)
           FROM generate_series(1, 10) AS d"""
    )
    assert await prune_older_than(sandbox.pool, "inbox", 5.5 * 24 * 3600, batch=2) == 5
    kept = await sandbox.pool.fetchval("SELECT max(now() - processed_at) FROM inbox")
    assert kept.days == 5
    assert await count(sandbox, "SELECT count(*) FROM inbox") == 5


async def test_idempotency_keys_are_forgotten_after_their_retention(sandbox: Sandbox) -> None:
    from omnistock.platform.runtime import prune_older_than

    await sandbox.pool.execute(
        """INSERT INTO idempotency_keys
               (principal, idempotency_key, request_hash, status_code, response_body, created_at)
           SELECT 'p', 'k' || h, 'x', 201, '{}', now() - make_interval(hours => h)
           FROM generate_series(1, 10) AS h"""
    )
    assert await prune_older_than(sandbox.pool, "idempotency_keys", 6.5 * 3600, batch=3) == 4
    assert await count(sandbox, "SELECT max(idempotency_key) FROM idempotency_keys") == "k6"


async def test_an_event_kafka_refuses_for_good_is_set_aside_and_the_rest_flows(
    sandbox: Sandbox,
) -> None:
    from omnistock.platform.outbox import OutboxRelay, requeue_dead

    await send(sandbox, "before", 10)
    # Larger than the broker accepts (1 MB by default): no retry can publish it.
    await sandbox.pool.execute(
        """INSERT INTO outbox (event_id, topic, message_key, payload)
           VALUES (gen_random_uuid(), $1, 'poison', $2)""",
        sandbox.topic,
        b"x" * 2_000_000,
    )
    # Within the producer's limit but over the topic's own: the broker refuses it on delivery.
    small_topic = f"{sandbox.topic}.small"
    await asyncio.to_thread(
        kafka.ensure_topics,
        sandbox.settings,
        [kafka.TopicSpec(small_topic, partitions=1, config={"max.message.bytes": "10000"})],
    )
    await sandbox.pool.execute(
        """INSERT INTO outbox (event_id, topic, message_key, payload)
           VALUES (gen_random_uuid(), $1, 'over-topic-limit', $2)""",
        small_topic,
        random.Random(7).randbytes(50_000),  # compression cannot shrink it under the limit
    )
    await send(sandbox, "after", 10)
    stop = asyncio.Event()
    relay = asyncio.create_task(OutboxRelay(sandbox.settings, sandbox.schema).run(stop))
    try:
        await wait_count(sandbox, "SELECT count(*) FROM outbox", 0, timeout_s=30)
    finally:
        stop.set()
        await relay
        await asyncio.to_thread(kafka.delete_topics, sandbox.settings, [small_topic])
    dead = await sandbox.pool.fetch(
        "SELECT message_key, reason, length(payload) FROM outbox_dead ORDER BY id"
    )
    assert [(d["message_key"], d["length"]) for d in dead] == [
        ("poison", 2_000_000),
        ("over-topic-limit", 50_000),
    ]
    assert all("too large" in d["reason"] for d in dead)
    published = await asyncio.to_thread(read_topic, sandbox.settings, sandbox.topic)
    assert len(published) == 20  # every event before and after the poison one

    async with sandbox.pool.acquire() as conn:
        assert await requeue_dead(conn) == 2
    assert await count(sandbox, "SELECT count(*) FROM outbox_dead") == 0
    assert await count(sandbox, "SELECT count(*) FROM outbox WHERE message_key = 'poison'") == 1
    assert await count(sandbox, "SELECT count(*) FROM outbox") == 2


async def test_the_inbox_keeps_what_it_remembered_across_the_group_id_migration(
    settings: Any,
) -> None:
    from omnistock.platform import db
    from omnistock.platform.migrations import load_migrations, migrate

    schema = f"test_inbox_{random.Random().getrandbits(40):x}"
    platform = load_migrations("platform", "omnistock.platform")
    conn = await db.connect(settings.database_url, schema)
    try:
        await migrate(conn, schema, [m for m in platform if m.version < 3])
        await conn.execute(
            """INSERT INTO inbox (consumer_group, event_id)
               SELECT g, gen_random_uuid() FROM unnest(ARRAY['b', 'a', 'b']) AS g"""
        )
        before = await conn.fetch("SELECT consumer_group, event_id FROM inbox")
        upto_3 = [m for m in platform if m.version <= 3]
        assert await migrate(conn, schema, upto_3) == ["platform/0003_inbox_group_ids"]
        after = await conn.fetch(
            """SELECT g.name AS consumer_group, i.event_id
               FROM inbox i JOIN consumer_groups g USING (group_id)"""
        )
        assert sorted(map(tuple, after)) == sorted(map(tuple, before))
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def test_database_outages_do_not_count_towards_dead_lettering(sandbox: Sandbox) -> None:
    from omnistock.contracts.demo import PingSent
    from omnistock.platform.consumer import EventConsumer, Subscription
    from omnistock.platform.outbox import OutboxRelay

    assert sandbox.settings.consumer_max_attempts == 5
    # Two failures of the handler's own among five outages: seven tries in all, yet below
    # the five failures that would dead-letter the event.
    script: list[Exception] = [
        ValueError("the whole batch"),
        OSError("database away"),
        OSError("database away"),
        ValueError("first"),
        OSError("database away"),
        OSError("database away"),
        ValueError("second"),
        OSError("database away"),
    ]

    async def flaky(conn: Any, batch: Any) -> None:
        if script:
            raise script.pop(0)
        await service.apply_pings(conn, batch)

    await send(sandbox, "zeta", 1)
    stop = asyncio.Event()
    consumer = EventConsumer(
        sandbox.settings,
        sandbox.pool,
        Subscription(group=sandbox.group, topics=[sandbox.topic], handlers={PingSent.TYPE: flaky}),
    )
    tasks = [
        asyncio.create_task(OutboxRelay(sandbox.settings, sandbox.schema).run(stop)),
        asyncio.create_task(consumer.run(stop)),
    ]
    try:
        await wait_count(sandbox, "SELECT count(*) FROM pongs", 1, timeout_s=60)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert script == []
    parked = await asyncio.to_thread(read_topic, sandbox.settings, sandbox.dead_letter_topic, 2)
    assert parked == []


async def test_a_consumer_fenced_for_good_joins_again_and_loses_nothing(sandbox: Sandbox) -> None:
    """A static member whose instance id another client takes (as after a broker restart,
    seen in the drills) gets a fatal error from its client; it must come back on its own."""
    from confluent_kafka import Consumer

    from omnistock.contracts.demo import PingSent
    from omnistock.platform.consumer import EventConsumer, Subscription
    from omnistock.platform.outbox import OutboxRelay

    settings = sandbox.settings.model_copy(
        update={"consumer_instance_id": f"fenced-{sandbox.group}"}
    )
    consumer = EventConsumer(
        settings,
        sandbox.pool,
        Subscription(
            group=sandbox.group,
            topics=[sandbox.topic],
            handlers={PingSent.TYPE: service.apply_pings},
        ),
    )
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(OutboxRelay(settings, sandbox.schema).run(stop)),
        asyncio.create_task(consumer.run(stop)),
    ]

    def impostor_joins() -> None:
        impostor = Consumer(kafka.consumer_config(settings, sandbox.group))
        try:
            impostor.subscribe([sandbox.topic])
            deadline = time.monotonic() + 30
            while not impostor.assignment() and time.monotonic() < deadline:
                impostor.poll(0.2)
            assert impostor.assignment(), "the impostor never got the partitions"
        finally:
            impostor.close()

    try:
        await send(sandbox, "eta", 50)
        await wait_count(sandbox, "SELECT count(*) FROM pongs", 50)
        await asyncio.to_thread(impostor_joins)
        await wait_for(lambda: consumer.restarts >= 1, 60, what="the fenced client replaced")
        await send(sandbox, "theta", 50)
        await wait_count(sandbox, "SELECT count(*) FROM pongs", 100)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    await assert_each_ping_applied_once(sandbox, 100)
