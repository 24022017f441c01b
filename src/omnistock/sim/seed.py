"""Loading a world into a running fleet through the public APIs, as a retailer's ERP, WMS and
store systems would on their first day: locations, channels and their sourcing, the stock
snapshot, a price list per channel, the lockers. Long imports show progress."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from omnistock.sim.fleet import Fleet
from omnistock.sim.world import Channel, Locker, World, price_rows, stock_rows

CSV = {"Content-Type": "text/csv; charset=utf-8"}
BLOCK = 2_000  # lines per chunk of a streamed upload


class SeedingFailed(RuntimeError):
    pass


def _checked(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 300:
        raise SeedingFailed(f"{what}: {response.status_code} {response.text[:500]}")
    return response.json() if response.content else None


async def _bounded(calls: Iterable[Awaitable[Any]], limit: int = 16) -> None:
    """The calls (coroutines not yet started), at most ``limit`` at a time."""
    gate = asyncio.Semaphore(limit)

    async def run(call: Awaitable[Any]) -> None:
        async with gate:
            await call

    await asyncio.gather(*(run(call) for call in calls))


async def _streamed(lines: Iterator[str], advance: Callable[[int], None]) -> AsyncIterator[bytes]:
    block: list[str] = []
    for line in lines:
        block.append(line)
        if len(block) == BLOCK:
            yield "".join(block).encode()
            advance(len(block))
            block = []
            await asyncio.sleep(0)
    if block:
        yield "".join(block).encode()
        advance(len(block))


async def seed(fleet: Fleet, world: World, console: Console | None = None) -> dict[str, float]:
    """Everything the world holds, loaded; seconds each part took."""
    console = console or Console(stderr=True)
    timings: dict[str, float] = {}
    inventory = fleet.headers("erp", ["inventory:admin", "inventory:write"])
    pricing = fleet.headers("erp", ["pricing:admin", "pricing:write"])
    places = fleet.headers("erp", ["collection-points:admin"])
    columns = (
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    timeout = httpx.Timeout(600, connect=10)
    async with httpx.AsyncClient(timeout=timeout) as client:
        started = time.monotonic()
        await _bounded(
            _put(
                client,
                f"{fleet.url('inventory')}/v1/locations/{location.location_id}",
                {
                    "kind": location.kind,
                    "country": location.country,
                    "capabilities": list(location.capabilities),
                    "name": location.location_id,
                },
                inventory,
            )
            for location in world.locations
        )
        await _bounded(
            _put(
                client,
                f"{fleet.url('inventory')}/v1/channels/{channel.channel_id}",
                {
                    "brand": channel.brand,
                    "market": channel.market.country,
                    "sourcing": [
                        {"location_id": loc, "priority": priority, "safety_stock": safety}
                        for loc, priority, safety in channel.sourcing
                    ],
                },
                inventory,
            )
            for channel in world.channels
        )
        await _bounded(
            _put(
                client,
                f"{fleet.url('pricing')}/v1/price-lists/{channel.channel_id}",
                {
                    "currency": channel.market.currency,
                    "vat_rate_basis_points": channel.market.vat_bp,
                },
                pricing,
            )
            for channel in world.channels
        )
        await _bounded(
            _put(
                client,
                f"{fleet.url('collection-points')}/v1/points/{locker.point_id}",
                _locker_body(locker),
                places,
            )
            for locker in world.lockers
        )
        timings["places_s"] = time.monotonic() - started

        with Progress(*columns, console=console, transient=False) as progress:
            stock_task = progress.add_task("stock snapshot (rows)", total=len(world.stock) + 1)
            per_brand = Counter(world.brand_of.values())
            price_task = progress.add_task(
                "price lists (rows)", total=sum(per_brand[c.brand] + 1 for c in world.channels)
            )
            started = time.monotonic()
            report = _checked(
                await client.post(
                    f"{fleet.url('inventory')}/v1/stock/bulk",
                    params={"source": f"sim-{world.seed}"},
                    content=_streamed(stock_rows(world), lambda n: progress.advance(stock_task, n)),
                    headers={**inventory, **CSV},
                ),
                "stock snapshot",
            )
            if report.get("rejected"):
                raise SeedingFailed(f"stock snapshot rejected rows: {report}")
            timings["stock_s"] = time.monotonic() - started

            started = time.monotonic()

            async def prices(channel: Channel) -> None:
                path = f"/v1/price-lists/{quote(channel.channel_id, safe='')}/imports"
                answer = _checked(
                    await client.post(
                        f"{fleet.url('pricing')}{path}",
                        content=_streamed(
                            price_rows(world, channel), lambda n: progress.advance(price_task, n)
                        ),
                        headers={**pricing, **CSV},
                    ),
                    f"prices of {channel.channel_id}",
                )
                if answer.get("rejected"):
                    raise SeedingFailed(f"prices of {channel.channel_id}: {answer}")

            # Two at a time: the service's own pace, not a thundering herd of imports.
            await _bounded((prices(c) for c in world.channels), limit=2)
            timings["prices_s"] = time.monotonic() - started
    return timings


async def _put(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    # Keyed by what is put: seeding the same world again is answered from the first time.
    digest = hashlib.sha256(f"{url} {json.dumps(body, sort_keys=True)}".encode()).hexdigest()
    key = {"Idempotency-Key": f"seed-{digest[:32]}"}
    _checked(await client.put(url, json=body, headers={**headers, **key}), f"PUT {url}")


def _degrees(micro: int) -> str:
    sign = "-" if micro < 0 else ""
    return f"{sign}{abs(micro) // 1_000_000}.{abs(micro) % 1_000_000:06d}"


def _locker_body(locker: Locker) -> dict[str, Any]:
    always = [{"opens": "00:00", "closes": "24:00"}]
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    return {
        "kind": "locker",
        "market": locker.market.country,
        "name": locker.point_id,
        "address": {
            "street": f"Parcel street {locker.point_id.rsplit('-', 1)[-1]}",
            "postcode": "00-001",
            "city": locker.market.code.upper(),
        },
        "position": {"latitude": _degrees(locker.lat_e6), "longitude": _degrees(locker.lon_e6)},
        "time_zone": locker.market.timezone,
        "opening_hours": {"weekly": dict.fromkeys(days, always)},
        "capabilities": ["pickup", "returns"],
        "capacity": locker.capacity,
    }
