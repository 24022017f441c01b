"""``omnistock bench reservations``: how many reservation lines per second, never oversold.

Four measurements in one run, each 1 line per reservation so the shapes match:
- ``pg_spread_per_s`` / ``pg_hot_per_s``: PostgreSQL's own ceiling, measured by pgbench with
  one conditional ``UPDATE … WHERE on_hand - reserved >= 1`` per transaction over 10,000 rows,
  and over one row;
- ``spread_lines_per_s`` / ``hot_lines_per_s``: the inventory service's reservation path
  (batcher, planning, idempotency keys, reservation rows, availability, outbox) driven by
  concurrent in-process clients over the same 10,000 SKUs, and on one flash-sale SKU. HTTP is
  not in this path: the storefront benchmark measures the HTTP stack.
``spread_cpu_us_per_line``: the CPU time per spread line of the reservation path (this process),
the relay, and the local stack's PostgreSQL and Kafka when they run on this machine.
After each phase the database is checked for oversell: no row with reserved + allocated above
on-hand, and reserved stock equal to the sum of the active reservation lines. A last flash sale
of 500 units to 2,000 concurrent buyers must grant exactly 500.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from omnistock.bench.common import broker_warmth, console, drop_schema, fresh_schema, report
from omnistock.bench.host import process_cpu_ms, stack_cpu_ms
from omnistock.inventory import domain, repository, service
from omnistock.inventory.api.schemas import InventorySettings
from omnistock.inventory.reserving import OutOfStock, ReservationBatcher, ReserveStock
from omnistock.platform import db
from omnistock.platform.clock import SystemClock
from omnistock.platform.runtime import settle_memory
from omnistock.platform.settings import Settings, get_settings

SCHEMA = "bench_inventory"
SKUS = 10_000
CLIENTS = 256
PGBENCH_CLIENTS = 16
FLASH_UNITS, FLASH_BUYERS = 500, 2000
CHANNELS = ("bench-pl", "bench-cz", "bench-sk")


def run(*, as_json: bool, seconds: float) -> None:
    settings = get_settings()
    warmth = broker_warmth()
    asyncio.run(fresh_schema(settings, SCHEMA, "inventory", "omnistock.inventory"))
    # The service's own relay publishes the events while it works, as in production.
    relay = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "omnistock.cli",
            "worker",
            "inventory",
            "--schema",
            SCHEMA,
            "--no-consumers",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        result = asyncio.run(_run(settings, seconds, relay.pid))
    finally:
        relay.terminate()
        relay.wait(30)
        asyncio.run(drop_schema(settings, SCHEMA))
    report({**result, **warmth}, as_json)


async def _run(settings: Settings, seconds: float, relay: int) -> dict[str, Any]:
    pool = await db.create_pool(settings.database_url, SCHEMA, min_size=8, max_size=16)
    try:
        console.print("[bold]pgbench[/bold]: one conditional UPDATE per transaction")
        pg_spread = await asyncio.to_thread(_pgbench, settings, pool_rows=SKUS, seconds=seconds)
        pg_hot = await asyncio.to_thread(_pgbench, settings, pool_rows=1, seconds=seconds)
        await _network(pool)
        own = InventorySettings()
        batcher = ReservationBatcher(
            pool, SystemClock(), own.reservation_batch_workers, own.reservation_batch_max
        )
        batcher.start()
        settle_memory()  # as the service's runtime does once started
        console.print(f"[bold]spread[/bold]: {CLIENTS} clients over {SKUS:,} SKUs")
        before = _cpu_ms(relay)
        spread, lines = await _drive(batcher, lambda rng: f"SKU-{rng.randrange(SKUS):05d}", seconds)
        used = _cpu_ms(relay)
        oversold = await _oversold(pool)
        console.print(f"[bold]hot[/bold]: {CLIENTS} clients on one SKU")
        hot, _ = await _drive(batcher, lambda _rng: "HOT", seconds)
        oversold += await _oversold(pool)
        granted = await _flash_sale(batcher, pool)
        oversold += await _oversold(pool) + abs(granted - FLASH_UNITS)
        await batcher.stop()
        batches, requests = batcher.batches, batcher.requests
    finally:
        await pool.close()
    return {
        "bench": "reservations",
        "spread_lines_per_s": round(spread, 1),
        "hot_lines_per_s": round(hot, 1),
        "pg_spread_per_s": round(pg_spread, 1),
        "pg_hot_per_s": round(pg_hot, 1),
        "spread_ratio": round(spread / pg_spread, 2),
        "hot_ratio": round(hot / pg_hot, 2),
        "flash_sale_units": FLASH_UNITS,
        "flash_sale_granted": granted,
        "mean_requests_per_transaction": round(requests / max(1, batches), 1),
        # Where a spread line's CPU goes: this process (the reservation path), the service's
        # relay, and the local stack's PostgreSQL and Kafka when they run here.
        "spread_cpu_us_per_line": {
            name: round((used[name] - before[name]) * 1000 / max(1, lines), 1)
            for name in used
            if name in before
        },
        "oversold": oversold,
    }


def _pgbench(settings: Settings, *, pool_rows: int, seconds: float) -> float:
    """Transactions per second of pgbench's own clients on a plain stock table."""
    binary = shutil.which("pgbench") or "/usr/lib/postgresql/15/bin/pgbench"
    table = f"{SCHEMA}.pg_ceiling"
    setup = (
        f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (sku int PRIMARY KEY, on_hand int, "
        f"reserved int, CHECK (reserved <= on_hand)); INSERT INTO {table} "
        f"SELECT g, 1000000000, 0 FROM generate_series(1, {pool_rows}) g;"
    )
    subprocess.run(["psql", settings.database_url, "-q", "-c", setup], check=True)
    script = (
        f"\\set s random(1, {pool_rows})\n"
        f"UPDATE {table} SET reserved = reserved + 1 WHERE sku = :s AND on_hand - reserved >= 1;\n"
    )
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    try:
        result = subprocess.run(
            [
                binary,
                "-n",
                "-f",
                handle.name,
                "-c",
                str(PGBENCH_CLIENTS),
                "-j",
                "2",
                "-T",
                str(max(1, int(seconds))),
                settings.database_url,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        Path(handle.name).unlink()
    for line in result.stdout.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise RuntimeError(f"pgbench printed no tps:\n{result.stdout}\n{result.stderr}")


async def _network(pool: Any) -> None:
    clock = SystemClock()
    async with pool.acquire() as conn, conn.transaction():
        await service.put_location(conn, "bench-wh", "warehouse", "PL", ["ship"], "bench warehouse")
        await service.put_location(conn, "bench-store", "store", "PL", ["ship"], "bench store")
        for market in ("PL", "CZ", "SK"):
            await service.put_channel(
                conn,
                clock,
                f"bench-{market.lower()}",
                "bench",
                market,
                [domain.Source("bench-wh", 1), domain.Source("bench-store", 2, safety_stock=2)],
            )
    skus = [f"SKU-{n:05d}" for n in range(SKUS)] + ["HOT"]
    for start in range(0, len(skus), 2000):
        async with pool.acquire() as conn, conn.transaction():
            await repository.lock_skus(conn, skus[start : start + 2000])
            await service.commit_changes(
                conn,
                clock,
                [
                    service.Change(sku, "bench-wh", on_hand=1_000_000, movement_reason="receipt")
                    for sku in skus[start : start + 2000]
                ],
            )


def _cpu_ms(relay: int) -> dict[str, float]:
    return {
        "reserving": process_cpu_ms(os.getpid()),
        "relay": process_cpu_ms(relay),
        **stack_cpu_ms(),
    }


async def _drive(batcher: ReservationBatcher, pick_sku: Any, seconds: float) -> tuple[float, int]:
    """Lines reserved per second by CLIENTS concurrent clients for ``seconds``, and how many."""
    deadline = time.monotonic() + seconds
    granted = 0
    run = uuid.uuid4().hex  # keys unique across phases, without a uuid4 per request

    async def client(n: int) -> None:
        nonlocal granted
        rng = random.Random(n)
        principal = f"bench-{n}"
        sent = 0
        while time.monotonic() < deadline:
            command = ReserveStock(
                channel_id=rng.choice(CHANNELS),
                lines=((pick_sku(rng), 1),),
                client_id=principal,
            )
            sent += 1
            await batcher.submit(command, principal, f"{sent}-{run}", "bench")
            granted += 1

    started = time.monotonic()
    await asyncio.gather(*(client(n) for n in range(CLIENTS)))
    return granted / (time.monotonic() - started), granted


async def _flash_sale(batcher: ReservationBatcher, pool: Any) -> int:
    """FLASH_BUYERS concurrent buyers for FLASH_UNITS units: how many were granted."""
    clock = SystemClock()
    async with pool.acquire() as conn, conn.transaction():
        await repository.lock_skus(conn, ["FLASH"])
        await service.commit_changes(
            conn,
            clock,
            [service.Change("FLASH", "bench-wh", on_hand=FLASH_UNITS, movement_reason="receipt")],
        )

    async def buyer(n: int) -> int:
        command = ReserveStock("bench-pl", (("FLASH", 1),), f"buyer-{n}")
        try:
            await batcher.submit(command, f"buyer-{n}", str(uuid.uuid4()), "flash")
        except OutOfStock:
            return 0
        return 1

    return sum(await asyncio.gather(*(buyer(n) for n in range(FLASH_BUYERS))))


async def _oversold(pool: Any) -> int:
    """Rows held beyond on-hand, plus rows whose reserved units differ from their lines."""
    value: int = await pool.fetchval(
        """SELECT (SELECT count(*) FROM stock WHERE reserved + allocated > on_hand)
                + (SELECT count(*) FROM stock s LEFT JOIN (
                       SELECT l.sku, l.location_id, sum(l.quantity) AS q
                       FROM reservation_lines l JOIN reservations r USING (reservation_id)
                       WHERE r.status = 'active' GROUP BY 1, 2) h USING (sku, location_id)
                   WHERE s.reserved <> coalesce(h.q, 0))"""
    )
    return value
