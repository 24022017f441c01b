"""``omnistock bench pricing``: bulk import rows/s and effective-price lookups/s.

The pricing service runs as it does in production (``omnistock serve pricing``, its relay
publishing every price to Kafka meanwhile) and is driven over HTTP. In the same run:
- ``import_rows_per_s``: a price file of ROWS base prices for as many SKUs, streamed to
  ``POST /v1/price-lists/{channel}/imports`` (parsing, checks, history rows, locks, published
  prices, one event per SKU in the outbox); baseline ``pg_copy_rows_per_s``, PostgreSQL's
  ``COPY`` of the same rows into a bare table of the same shape;
- ``lookups_per_s``: SKU prices answered per second by concurrent ``POST …/quotes`` requests of
  500 random SKUs each (a third of the SKUs are on sale, so the Omnibus lowest price is
  computed for them); baseline ``pg_lookups_per_s``: the same concurrency running just the
  service's two timeline queries for 500 SKUs, with no computing and no HTTP.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import orjson

from omnistock.bench.common import console, drop_schema, fresh_schema, percentile, report
from omnistock.platform import db
from omnistock.platform.auth import mint_token
from omnistock.platform.clock import SystemClock
from omnistock.platform.settings import Settings, get_settings
from omnistock.pricing import service

SCHEMA = "bench_pricing"
CHANNEL = "bench-pl"
ROWS = int(os.environ.get("OMNISTOCK_BENCH_PRICING_ROWS", "1000000"))
QUOTE_SKUS = 500
CLIENTS = 8
PORT = int(os.environ.get("OMNISTOCK_BENCH_PORT", "18090"))
BASE_URL = f"http://127.0.0.1:{PORT}"


def run(*, as_json: bool, seconds: float) -> None:
    settings = get_settings()
    asyncio.run(fresh_schema(settings, SCHEMA, "pricing", "omnistock.pricing"))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "omnistock.cli",
            "serve",
            "pricing",
            "--schema",
            SCHEMA,
            "--port",
            str(PORT),
        ],
        env={**os.environ, "OMNISTOCK_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        result = asyncio.run(_run(settings, seconds))
    finally:
        server.terminate()
        server.wait(30)
        asyncio.run(drop_schema(settings, SCHEMA))
    report(result, as_json)


def sku_of(n: int) -> str:
    return f"SKU-{n:07d}"


async def _run(settings: Settings, seconds: float) -> dict[str, Any]:
    token = mint_token(settings, "bench", ["pricing:admin", "pricing:write", "pricing:read"])
    headers = {"Authorization": f"Bearer {token}"}
    pool = await db.create_pool(settings.database_url, SCHEMA, min_size=2, max_size=CLIENTS)
    try:
        async with httpx.AsyncClient(base_url=BASE_URL, headers=headers, timeout=600) as client:
            await _wait_ready(client)
            answer = await client.put(
                f"/v1/price-lists/{CHANNEL}",
                json={"currency": "PLN", "vat_rate_basis_points": 2300},
            )
            answer.raise_for_status()
            console.print(f"[bold]COPY[/bold]: {ROWS:,} rows into a bare table")
            pg_copy = await _copy_baseline(pool)
            console.print(f"[bold]import[/bold]: {ROWS:,} base prices over HTTP")
            imported, import_report = await _import(client)
            await _put_on_sale(pool)
            console.print(f"[bold]quotes[/bold]: {CLIENTS} clients, {QUOTE_SKUS} SKUs each")
            pg_lookups = await _drive(lambda skus: _timeline_queries(pool, skus), seconds)
            lookups = await _drive(lambda skus: _quote_request(client, skus), seconds)
    finally:
        await pool.close()
    return {
        "bench": "pricing",
        "rows": ROWS,
        "import_rows_per_s": round(imported, 1),
        "pg_copy_rows_per_s": round(pg_copy, 1),
        "import_ratio": round(imported / pg_copy, 3),
        "import_rejected": import_report["rejected"],
        "import_published": import_report["published"],
        "lookups_per_s": round(lookups[0], 1),
        "pg_lookups_per_s": round(pg_lookups[0], 1),
        "lookup_ratio": round(lookups[0] / pg_lookups[0], 3),
        "quote_request_p50_ms": round(lookups[1], 2),
        "quote_request_p99_ms": round(lookups[2], 2),
        "skus_per_request": QUOTE_SKUS,
    }


async def _wait_ready(client: httpx.AsyncClient, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the pricing service did not become ready; try `omnistock serve pricing`")


def _csv_rows() -> list[bytes]:
    rng = random.Random(7)
    rows = [b"sku,price\n"]
    rows.extend(
        f"{sku_of(n)},{rng.randrange(1_000, 99_999) / 100:.2f}\n".encode() for n in range(ROWS)
    )
    return rows


async def _copy_baseline(pool: asyncpg.Pool) -> float:
    rng = random.Random(7)
    now = SystemClock().now()
    records = [(CHANNEL, sku_of(n), now, rng.randrange(1_000, 99_999), now) for n in range(ROWS)]
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE copy_ceiling (LIKE base_prices INCLUDING DEFAULTS INCLUDING INDEXES)"
        )
        started = time.perf_counter()
        await conn.copy_records_to_table("copy_ceiling", records=records)
        elapsed = time.perf_counter() - started
        await conn.execute("DROP TABLE copy_ceiling")
    return ROWS / elapsed


async def _import(client: httpx.AsyncClient) -> tuple[float, dict[str, Any]]:
    rows = _csv_rows()

    async def body() -> AsyncIterator[bytes]:
        for start in range(0, len(rows), 10_000):
            yield b"".join(rows[start : start + 10_000])

    started = time.perf_counter()
    answer = await client.post(
        f"/v1/price-lists/{CHANNEL}/imports",
        content=body(),
        headers={"Content-Type": "text/csv"},
    )
    elapsed = time.perf_counter() - started
    answer.raise_for_status()
    result: dict[str, Any] = answer.json()
    return ROWS / elapsed, result


async def _put_on_sale(pool: asyncpg.Pool) -> None:
    """A third of the SKUs on sale now, so that quotes compute the Omnibus lowest price."""
    clock = SystemClock()
    now = clock.now()
    on_sale = [sku_of(n) for n in range(0, ROWS, 3)]
    for start in range(0, len(on_sale), 2_000):
        async with pool.acquire() as conn, conn.transaction():
            await service.schedule_sales(
                conn,
                clock,
                CHANNEL,
                now - timedelta(hours=1),
                now + timedelta(days=7),
                [service.SaleLine(sku, 500) for sku in on_sale[start : start + 2_000]],
            )


async def _timeline_queries(pool: asyncpg.Pool, skus: list[str]) -> None:
    async with pool.acquire() as conn:
        await service.currency_of(conn, CHANNEL)
        for table in ("base_prices", "sales"):
            await conn.fetch(
                f"SELECT * FROM {table} WHERE channel_id = $1 AND sku = ANY($2::text[])",
                CHANNEL,
                skus,
            )


async def _quote_request(client: httpx.AsyncClient, skus: list[str]) -> None:
    answer = await client.post(f"/v1/price-lists/{CHANNEL}/quotes", json={"skus": skus})
    answer.raise_for_status()
    prices = orjson.loads(answer.content)["prices"]
    if len(prices) != len(skus) or any(p is None for p in prices.values()):
        raise RuntimeError("a quote came back without a price")


async def _drive(lookup: Any, seconds: float) -> tuple[float, float, float]:
    """SKUs looked up per second by CLIENTS concurrent clients, and request p50/p99 in ms."""
    deadline = time.monotonic() + seconds
    latencies: list[float] = []

    async def client(n: int) -> None:
        rng = random.Random(n)
        while time.monotonic() < deadline:
            skus = [sku_of(n) for n in rng.sample(range(ROWS), QUOTE_SKUS)]
            started = time.perf_counter()
            await lookup(skus)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.monotonic()
    await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    elapsed = time.monotonic() - started
    return (
        len(latencies) * QUOTE_SKUS / elapsed,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
    )
