"""``omnistock bench storefront``: the read path under load, its cold start and its freshness.

In one run, with one load generator (vegeta, built on first use into ``.cache/``):
- ``raw_asgi_rps``: a bare ASGI "hello" on the same server stack (uvicorn as ``omnistock
  serve`` runs it), driven at full load: the ceiling;
- ``single_rps`` / ``single_p99_ms``: single-SKU lookups at full load (same concurrency);
- ``p99_ms_at_4000_rps``: single-SKU lookups offered at a constant 4,000 requests/s;
- ``batch_skus_per_s``: 48-SKU listing lookups at full load, in SKUs answered per second;
- the same three through the FastAPI routes (``fastapi_*``, the lean route switched off);
- ``cold_start_s_1m`` / ``rss_mb_1m``: the bench writes 1,000,000 (channel, SKU) entries (an
  availability and a price event each) onto compacted topics of its own, then times a fresh
  ``omnistock serve storefront`` process from its start to ready, and reads its memory;
- ``propagation_p99_ms``: stock counts sent to inventory (``omnistock serve inventory``) at
  1,000 changes/s, from each change's commit (PostgreSQL's commit timestamp) through the outbox
  relay and Kafka to a client of the storefront first getting the new figure.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from omnistock.bench.common import console, create_topics, delete_topics, report, run_id
from omnistock.bench.storefront.load import (
    FIXED_RATE,
    VEGETA_VERSION,
    Loads,
    ensure_vegeta,
)
from omnistock.bench.storefront.propagation import CHANGES_PER_S, measure_propagation
from omnistock.bench.storefront.servers import (
    base_url,
    hello_command,
    process,
    rss_mb,
    serve_command,
    wait_ready,
)
from omnistock.contracts.inventory import AvailabilityChanged
from omnistock.contracts.pricing import PriceChanged
from omnistock.platform import events, kafka
from omnistock.platform.settings import Settings, get_settings

CHANNELS, SKUS_PER_CHANNEL = 20, 50_000  # 1,000,000 entries: a catalogue sold in 20 markets
BATCH_SKUS = 48  # a listing page
_LEAN = "OMNISTOCK_STOREFRONT_LEAN_ROUTES"


def run(*, as_json: bool, seconds: float) -> None:
    vegeta = ensure_vegeta()
    result = asyncio.run(_run(get_settings(), vegeta, seconds))
    report(result, as_json)


async def _run(settings: Settings, vegeta: Path, seconds: float) -> dict[str, Any]:
    rid = run_id()
    topics = [f"omnistock.bench.{rid}.availability", f"omnistock.bench.{rid}.prices"]
    await create_topics(settings, [kafka.TopicSpec(t, compacted=True) for t in topics])
    result: dict[str, Any] = {"bench": "storefront", "load_generator": f"vegeta {VEGETA_VERSION}"}
    try:
        console.print(f"[bold]topics[/bold]: {CHANNELS * SKUS_PER_CHANNEL:,} entries")
        await asyncio.to_thread(produce_entries, settings, *topics)
        env = {
            "OMNISTOCK_STOREFRONT_AVAILABILITY_TOPIC": topics[0],
            "OMNISTOCK_STOREFRONT_PRICES_TOPIC": topics[1],
        }
        with tempfile.TemporaryDirectory() as folder:
            loads = Loads(vegeta, Path(folder), settings, seconds)
            with process("hello", hello_command()):
                await wait_ready(f"{base_url()}/", 30)
                console.print("[bold]raw ASGI[/bold] hello at full load")
                result["raw_asgi_rps"] = loads.full(loads.targets("hello", ["/"]))["rps"]
            console.print("[bold]cold start[/bold] of a replica with 1,000,000 entries")
            with process("storefront", serve_command("storefront"), env) as server:
                started = time.perf_counter()
                await wait_ready(f"{base_url()}/readyz", 120)
                result["cold_start_s_1m"] = round(time.perf_counter() - started, 2)
                result["rss_mb_1m"] = rss_mb(server.pid)
                result.update(_read_path(loads, ""))
            console.print("[bold]FastAPI[/bold] routes instead of the lean route")
            with process(
                "storefront-fastapi", serve_command("storefront"), {**env, _LEAN: "false"}
            ):
                await wait_ready(f"{base_url()}/readyz", 120)
                result.update(_read_path(loads, "fastapi_"))
        console.print(f"[bold]propagation[/bold] at {CHANGES_PER_S:,} stock changes/s")
        result.update(await measure_propagation(settings, seconds))
    finally:
        await delete_topics(settings, topics)
    result["single_ratio"] = round(result["single_rps"] / result["raw_asgi_rps"], 3)
    return result


def _read_path(loads: Loads, prefix: str) -> dict[str, Any]:
    rng = random.Random(7)
    single = loads.targets("single", [_one_path(rng) for _ in range(20_000)])
    batch = loads.targets("batch", [_listing_path(rng) for _ in range(2_000)])
    console.print(f"  {prefix or 'lean '}single-SKU lookups at full load")
    full = loads.full(single)
    console.print(f"  {prefix or 'lean '}single-SKU lookups at {FIXED_RATE:,}/s")
    fixed = loads.attack(single, rate=FIXED_RATE)
    console.print(f"  {prefix or 'lean '}{BATCH_SKUS}-SKU lookups at full load")
    listings = loads.full(batch)
    return {
        f"{prefix}single_rps": full["rps"],
        f"{prefix}single_p99_ms": full["p99_ms"],
        f"{prefix}p99_ms_at_4000_rps": fixed["p99_ms"],
        f"{prefix}achieved_rps_at_4000": fixed["rps"],
        f"{prefix}batch_skus_per_s": round(listings["rps"] * BATCH_SKUS, 1),
        f"{prefix}batch_p99_ms": listings["p99_ms"],
    }


def _one_path(rng: random.Random) -> str:
    channel, sku = rng.randrange(CHANNELS), rng.randrange(SKUS_PER_CHANNEL)
    return f"/v1/channels/{channel_name(channel)}/skus/{sku_name(sku)}"


def _listing_path(rng: random.Random) -> str:
    skus = ",".join(map(sku_name, rng.sample(range(SKUS_PER_CHANNEL), BATCH_SKUS)))
    return f"/v1/channels/{channel_name(rng.randrange(CHANNELS))}/skus?skus={skus}"


def channel_name(n: int) -> str:
    return f"bench-m{n:02d}"


def sku_name(n: int) -> str:
    return f"SKU-{n:06d}"


def produce_entries(settings: Settings, availability_topic: str, prices_topic: str) -> None:
    """An availability and a price event for each (channel, SKU), as inventory and pricing
    publish them: CloudEvents envelopes keyed ``channel:sku``."""
    producer = kafka.create_producer(
        settings, **{"linger.ms": 50, "batch.size": 1_000_000, "queue.buffering.max.ms": 50}
    )
    now = datetime.now(UTC)
    for c in range(CHANNELS):
        channel = channel_name(c)
        for n in range(SKUS_PER_CHANNEL):
            sku, key = sku_name(n), f"{channel}:{sku_name(n)}"
            regular = 1_999 + (n % 100) * 100
            reduced = n % 5 == 0
            payloads = [
                (availability_topic, AvailabilityChanged(channel, sku, n % 40, 1)),
                (
                    prices_topic,
                    PriceChanged(
                        channel,
                        sku,
                        1,
                        regular * 4 // 5 if reduced else regular,
                        regular,
                        "PLN",
                        reduced,
                        regular if reduced else None,
                    ),
                ),
            ]
            for topic, payload in payloads:
                _, value = events.encode(
                    payload, source="/omnistock/bench", subject=key, time=now, aggregate_version=1
                )
                while True:
                    try:
                        producer.produce(topic, value=value, key=key)
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.poll(0)
    if producer.flush(60) != 0:
        raise RuntimeError("not every entry reached Kafka")
