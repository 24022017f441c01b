"""``omnistock bench outbox``: the event path end to end against plain Kafka.

Three measurements in one run:
- raw: plain confluent-kafka produce → consume of the same bytes (the ceiling);
- end to end: transactions write pings and their events into the outbox, the relay (its own
  process) publishes them, the consumer (its own process) applies them through the inbox;
- latency at a steady 1,000 events/s: from the producing transaction's commit to the consumer's
  effect committed, both read from PostgreSQL's commit timestamps (one clock, no skew).
"""

from __future__ import annotations

import asyncio
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

from confluent_kafka import Consumer, Producer
from rich.progress import Progress

from omnistock.bench.common import (
    console,
    create_topics,
    delete_topics,
    drop_schema,
    fresh_schema,
    percentile,
    report,
    run_id,
)
from omnistock.contracts.demo import PingSent
from omnistock.demo import service, workers
from omnistock.platform import db, events, kafka
from omnistock.platform.clock import SystemClock
from omnistock.platform.outbox import OutboxRelay
from omnistock.platform.settings import Settings, get_settings

SCHEMA = "bench_outbox"
RAW_EVENTS = 200_000
OUTBOX_EVENTS = 100_000
EVENTS_PER_TRANSACTION = 50
WRITERS = 4
STEADY_RATE = 1000
WARM_UP_S = 3.0  # at the steady rate, not measured: connections, prepared statements, caches


def run(*, as_json: bool, seconds: float) -> None:
    result = asyncio.run(_run(get_settings(), seconds))
    report(result, as_json)


async def _run(settings: Settings, seconds: float) -> dict[str, Any]:
    rid = run_id()
    topic, raw_topic, group = (
        f"omnistock.bench.{rid}.pings",
        f"omnistock.bench.{rid}.raw",
        f"omnistock.bench.{rid}.pongs",
    )
    await fresh_schema(settings, SCHEMA, "demo", "omnistock.demo")
    await create_topics(
        settings,
        [
            kafka.TopicSpec(topic),
            kafka.TopicSpec(raw_topic),
            kafka.TopicSpec(kafka.dead_letter_topic(group)),
        ],
    )
    processes: list[BaseProcess] = []
    pool = await db.create_pool(
        settings.database_url, SCHEMA, min_size=WRITERS, max_size=WRITERS * 4
    )
    try:
        console.print(f"[bold]raw[/bold]: {RAW_EVENTS:,} messages produce → consume")
        raw_rate = await asyncio.to_thread(_raw_rate, settings, raw_topic, RAW_EVENTS)

        processes.append(workers.start_consumer(settings, SCHEMA, topic, group))
        # Latency first: after the bulk phases autovacuum would be cleaning their dead rows
        # during the measurement, which says more about them than about the event path.
        console.print(f"[bold]latency[/bold]: {STEADY_RATE:,} events/s for {seconds:.0f} s")
        relay = workers.start_relay(settings, SCHEMA)
        await asyncio.to_thread(_wait_for_stable_group, settings, group)
        latencies, clock_source = await _steady_latency(pool, topic, seconds)
        relay.terminate()
        await asyncio.to_thread(relay.join, 20)
        console.print(f"[bold]outbox[/bold]: {OUTBOX_EVENTS:,} committed events → Kafka → inbox")
        drain_rate = await _drain_rate(settings, pool, topic, group, OUTBOX_EVENTS, processes)
        console.print(f"[bold]with writers[/bold]: {OUTBOX_EVENTS:,} events written and applied")
        write_rate = await _write_to_apply_rate(pool, topic, OUTBOX_EVENTS)
        lost = await service.unapplied_pings(pool)
        applied_twice = await pool.fetchval("SELECT count(*) - count(DISTINCT ping_id) FROM pongs")
    finally:
        for process in processes:
            process.terminate()
            process.join(20)
        await pool.close()
        await delete_topics(settings, [topic, raw_topic, kafka.dead_letter_topic(group)])
        await drop_schema(settings, SCHEMA)
    return {
        "bench": "outbox",
        "events_per_s": round(drain_rate, 1),
        "raw_events_per_s": round(raw_rate, 1),
        "ratio": round(drain_rate / raw_rate, 3),
        "write_to_apply_events_per_s": round(write_rate, 1),
        "commit_to_apply_p50_ms": round(percentile(latencies, 0.50), 2),
        "commit_to_apply_p99_ms": round(percentile(latencies, 0.99), 2),
        "latency_rate_per_s": STEADY_RATE,
        "latency_samples": len(latencies),
        "latency_clock": clock_source,
        "lost": lost,
        "applied_twice": applied_twice,
    }


def _sample_event() -> bytes:
    payload = PingSent(
        ping_id="0" * 36, stream="raw", sequence=1, message="m", sent_at_ns=time.time_ns()
    )
    return events.encode(
        payload, source="/bench", subject="raw", time=SystemClock().now(), aggregate_version=1
    )[1]


def _raw_rate(settings: Settings, topic: str, count: int) -> float:
    """Plain produce → consume of ``count`` messages of the same size, in two threads."""
    value = _sample_event()
    consumer = Consumer(kafka.consumer_config(settings, f"{topic}.reader"))
    consumer.subscribe([topic])
    while not consumer.assignment():
        consumer.poll(0.1)
    producer = Producer(kafka.producer_config(settings))
    received = 0
    started = time.perf_counter()

    def produce() -> None:
        for n in range(count):
            while True:
                try:
                    producer.produce(topic, value=value, key=f"k{n % 997}")
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.flush(60)

    sender = threading.Thread(target=produce)
    sender.start()
    while received < count:
        received += sum(1 for m in consumer.consume(1000, 0.5) if m.error() is None)
    elapsed = time.perf_counter() - started
    sender.join()
    consumer.close()
    return count / elapsed


async def _write(pool: Any, topic: str, count: int, streams: str) -> None:
    """``count`` events in transactions of EVENTS_PER_TRANSACTION, from WRITERS writers."""
    clock = SystemClock()
    per_writer = count // WRITERS

    async def writer(n: int) -> None:
        for _ in range(0, per_writer, EVENTS_PER_TRANSACTION):
            async with pool.acquire() as conn, conn.transaction():
                await service.send_pings(
                    conn, f"{streams}-{n}", ["m"] * EVENTS_PER_TRANSACTION, clock, topic=topic
                )

    await asyncio.gather(*(writer(n) for n in range(WRITERS)))


async def _until_applied(pool: Any, target: int, timeout_s: float = 300) -> None:
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("applied", total=target)
        deadline = time.monotonic() + timeout_s
        while True:
            # The pongs sequence is read in O(1); count(*) scans the table, so polling it would
            # put the benchmark's own load on the database it measures. A rolled-back batch
            # leaves gaps in the sequence, so the count confirms.
            issued = await pool.fetchval("SELECT last_value FROM pongs_applied_order_seq")
            if issued >= target and await pool.fetchval("SELECT count(*) FROM pongs") >= target:
                return
            progress.update(task, completed=issued)
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {issued} of {target} events applied after {timeout_s}s")
            await asyncio.sleep(0.005)


def _wait_for_stable_group(settings: Settings, group: str, timeout_s: float = 60) -> None:
    """Until the consumer has joined its group and holds partitions."""
    admin = kafka.admin_client(settings)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        description = admin.describe_consumer_groups([group])[group].result(timeout=10)
        if str(description.state).endswith("STABLE") and description.members:
            return
        time.sleep(0.1)
    raise TimeoutError(f"consumer group {group} did not become stable")


async def _drain_rate(
    settings: Settings,
    pool: Any,
    topic: str,
    group: str,
    count: int,
    processes: list[BaseProcess],
) -> float:
    """Events already committed in the outbox, from the relay's start to the last one applied.

    The bench holds the relay's leader lock while the events are written, so the relay process
    is up and waiting; releasing the lock starts the clock and the relay at the same instant.
    """
    lock = await pool.acquire()
    await lock.execute("SELECT pg_advisory_lock($1)", OutboxRelay(settings, SCHEMA).lock_key)
    processes.append(workers.start_relay(settings, SCHEMA))
    before = await pool.fetchval("SELECT count(*) FROM pongs")
    await _write(pool, topic, count, "drain")
    await asyncio.sleep(2.0)  # the relay process has started and waits on the lock
    await asyncio.to_thread(_wait_for_stable_group, settings, group)
    started = time.perf_counter()
    await lock.execute("SELECT pg_advisory_unlock_all()")
    await pool.release(lock)
    await _until_applied(pool, before + count)
    return count / (time.perf_counter() - started)


async def _write_to_apply_rate(pool: Any, topic: str, count: int) -> float:
    """Writers, relay and consumer all at once: from the first write to the last apply."""
    before = await pool.fetchval("SELECT count(*) FROM pongs")
    started = time.perf_counter()
    await _write(pool, topic, count, "stream")
    await _until_applied(pool, before + count)
    return count / (time.perf_counter() - started)


async def _steady_latency(pool: Any, topic: str, seconds: float) -> tuple[list[float], str]:
    clock = SystemClock()
    tick = 0.01
    per_tick = int(STEADY_RATE * tick)
    warm_up_ticks = int(WARM_UP_S / tick)
    ticks = warm_up_ticks + int(seconds / tick)
    pending: set[asyncio.Task[None]] = set()

    async def one(n: int, measured: bool) -> None:
        stream = f"latency-{n % 64}" if measured else f"warm-up-{n % 64}"
        async with pool.acquire() as conn, conn.transaction():
            await service.send_pings(conn, stream, ["m"], clock, topic=topic)

    started = time.perf_counter()
    for t in range(ticks):
        for n in range(per_tick):
            task = asyncio.create_task(one(t * per_tick + n, t >= warm_up_ticks))
            pending.add(task)
            task.add_done_callback(pending.discard)
        # Pace against the start, so a slow tick does not lower the offered rate.
        await asyncio.sleep(max(0.0, started + (t + 1) * tick - time.perf_counter()))
    await asyncio.gather(*pending)
    total = await pool.fetchval("SELECT count(*) FROM pings")
    await _until_applied(pool, total)
    tracked = await pool.fetchval("SELECT current_setting('track_commit_timestamp') = 'on'")
    if tracked:
        rows = await pool.fetch(
            """SELECT extract(epoch FROM pg_xact_commit_timestamp(q.xmin)
                                        - pg_xact_commit_timestamp(p.xmin)) * 1000 AS ms
               FROM pings p JOIN pongs q USING (ping_id) WHERE p.stream LIKE 'latency-%'"""
        )
        return [float(r["ms"]) for r in rows], "postgres commit timestamps"
    rows = await pool.fetch(
        """SELECT (q.applied_at_ns - q.sent_at_ns) / 1e6 AS ms FROM pongs q
           WHERE q.stream LIKE 'latency-%'"""
    )
    return [float(r["ms"]) for r in rows], "client clocks (track_commit_timestamp is off)"
