"""Propagation: from a stock change committed in inventory to the new figure served."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
import orjson

from omnistock.bench.common import drop_schema, fresh_schema, percentile, run_id
from omnistock.bench.storefront.servers import HOST, PORT, process, serve_command, wait_ready
from omnistock.platform import db
from omnistock.platform.auth import mint_token
from omnistock.platform.settings import Settings

CHANGES_PER_S, CHANGED_SKUS, WARM_UP_S = 1000, 1000, 2.0
COUNTS_PER_REQUEST = 10
INVENTORY_SCHEMA = "bench_storefront_inventory"


async def measure_propagation(settings: Settings, seconds: float) -> dict[str, Any]:
    """Counts through inventory's API at a constant rate; a client polls the storefront for
    the SKUs changed and not yet seen changed; commit times come from PostgreSQL."""
    await fresh_schema(settings, INVENTORY_SCHEMA, "inventory", "omnistock.inventory")
    inventory_port, storefront_port = PORT + 1, PORT
    pool = await db.create_pool(settings.database_url, INVENTORY_SCHEMA, min_size=1, max_size=2)
    try:
        with (
            process(
                "inventory",
                serve_command("inventory", inventory_port, "--schema", INVENTORY_SCHEMA),
            ),
            process("storefront-propagation", serve_command("storefront")),
        ):
            await wait_ready(f"http://{HOST}:{inventory_port}/readyz", 60)
            await wait_ready(f"http://{HOST}:{storefront_port}/readyz", 300)
            return await _measure(settings, pool, inventory_port, storefront_port, seconds)
    finally:
        await pool.close()
        await drop_schema(settings, INVENTORY_SCHEMA)


async def _measure(
    settings: Settings,
    pool: asyncpg.Pool,
    inventory_port: int,
    storefront_port: int,
    seconds: float,
) -> dict[str, Any]:
    channel, warehouse = f"bench-prop-{run_id()}", f"wh-{run_id()}"
    admin = {"Authorization": f"Bearer {mint_token(settings, 'bench', ['inventory:admin'])}"}
    sourcing = [{"location_id": warehouse, "priority": 1}]
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{inventory_port}", headers=admin) as c:
        answer = await c.put(
            f"/v1/locations/{warehouse}", json={"kind": "warehouse", "country": "PL", "name": "w"}
        )
        answer.raise_for_status()
        answer = await c.put(
            f"/v1/channels/{channel}", json={"brand": "b", "market": "PL", "sourcing": sourcing}
        )
        answer.raise_for_status()
    if not await pool.fetchval("SELECT current_setting('track_commit_timestamp') = 'on'"):
        raise RuntimeError("propagation is timed by commit timestamps: track_commit_timestamp")
    writer = Http(HOST, inventory_port, mint_token(settings, "bench", ["inventory:write"]))
    reader = Http(HOST, storefront_port, mint_token(settings, "bench", ["storefront:read"]))
    probe = Propagation(writer, reader, pool, channel, warehouse)
    try:
        return await probe.measure(seconds)
    finally:
        await writer.close()
        await reader.close()


class Propagation:
    """Stock counts at a constant rate through inventory's API, one SKU after another. After
    each, PostgreSQL says which availability version it committed and when; meanwhile a client
    polls the storefront for the SKUs being changed and notes when it first sees each version.
    """

    def __init__(
        self, writer: Http, reader: Http, pool: asyncpg.Pool, channel: str, warehouse: str
    ) -> None:
        self._writer, self._reader, self._pool = writer, reader, pool
        self._channel, self._warehouse = channel, warehouse
        self._skus = [f"PROP-{n:05d}" for n in range(CHANGED_SKUS)]
        self._watched: dict[str, int] = {}  # SKU -> the version awaited (0: not known yet)
        self._seen: dict[str, int] = {}  # SKU -> the version last served
        self._first_seen: dict[tuple[str, int], float] = {}
        self._committed: dict[tuple[str, int], float] = {}
        self._done = asyncio.Event()

    async def measure(self, seconds: float) -> dict[str, Any]:
        poller = asyncio.create_task(self._poll())
        requests = int((WARM_UP_S + seconds) * CHANGES_PER_S / COUNTS_PER_REQUEST)
        interval = COUNTS_PER_REQUEST / CHANGES_PER_S
        started = time.perf_counter()
        changes = []
        for n in range(requests):
            changes.append(asyncio.create_task(self._change(n)))
            # Paced against the start, so a slow moment does not lower the offered rate.
            await asyncio.sleep(max(0.0, started + (n + 1) * interval - time.perf_counter()))
        await asyncio.gather(*changes)
        offered_s = time.perf_counter() - started
        self._done.set()
        await asyncio.wait_for(poller, 60)
        warm_until = min(self._committed.values(), default=0.0) + WARM_UP_S
        latencies = [
            (self._first_seen[key] - committed) * 1000
            for key, committed in self._committed.items()
            if committed >= warm_until and key in self._first_seen
        ]
        return {
            "propagation_p50_ms": round(percentile(latencies, 0.5), 2),
            "propagation_p99_ms": round(percentile(latencies, 0.99), 2),
            "propagation_changes_per_s": round(requests * COUNTS_PER_REQUEST / offered_s, 1),
            "propagation_samples": len(latencies),
        }

    async def _change(self, n: int) -> None:
        """Counts of COUNTS_PER_REQUEST SKUs, as a WMS sends them: one transaction."""
        skus = [
            self._skus[(n * COUNTS_PER_REQUEST + k) % CHANGED_SKUS]
            for k in range(COUNTS_PER_REQUEST)
        ]
        on_hand = 100 + n * COUNTS_PER_REQUEST // CHANGED_SKUS
        for sku in skus:
            self._watched.setdefault(sku, 0)
        body = b"".join(
            orjson.dumps({"sku": sku, "location_id": self._warehouse, "on_hand": on_hand}) + b"\n"
            for sku in skus
        )
        status, _ = await self._writer.request(
            "POST", "/v1/stock/bulk?source=bench", body, b"application/x-ndjson"
        )
        if status != 200:
            raise RuntimeError(f"inventory answered {status} to counts")
        rows = await self._pool.fetch(
            """SELECT sku, version, extract(epoch FROM pg_xact_commit_timestamp(xmin)) AS committed
               FROM availability WHERE channel_id = $1 AND sku = ANY($2::text[])""",
            self._channel,
            skus,
        )
        for row in rows:
            sku, version = row["sku"], row["version"]
            if (sku, version) in self._committed:
                self._watched.pop(sku, None)  # the count made no new figure: nothing to time
                continue
            self._committed[(sku, version)] = float(row["committed"])
            if self._seen.get(sku, -1) >= version:
                self._watched.pop(sku, None)  # served before we knew which version to await
            else:
                self._watched[sku] = version

    async def _poll(self) -> None:
        while not self._done.is_set() or self._watched:
            watched = list(self._watched)
            for start in range(0, len(watched), 200):
                await self._look(watched[start : start + 200])
            await asyncio.sleep(0.002)

    async def _look(self, skus: list[str]) -> None:
        path = f"/v1/channels/{self._channel}/skus?skus={','.join(skus)}"
        status, raw = await self._reader.request("GET", path)
        now = time.time()
        figures = orjson.loads(raw)["skus"] if status == 200 else {}
        for sku in skus:
            version = ((figures.get(sku) or {}).get("versions") or {}).get("availability")
            if version is None or version <= self._seen.get(sku, -1):
                continue
            self._seen[sku] = version
            self._first_seen[(sku, version)] = now
            awaited = self._watched.get(sku)
            if awaited and version >= awaited:
                del self._watched[sku]


class Http:
    """A minimal HTTP/1.1 client over a pool of keep-alive connections: httpx costs several
    times more CPU per request, which this machine's two cores would take from the servers."""

    def __init__(self, host: str, port: int, token: str, connections: int = 64) -> None:
        self._address = (host, port)
        self._head = f"Host: {host}\r\nAuthorization: Bearer {token}\r\n".encode()
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self._opened = 0
        self._limit = connections

    async def request(
        self, method: str, path: str, body: bytes = b"", content_type: bytes = b"application/json"
    ) -> tuple[int, bytes]:
        if self._idle.empty() and self._opened < self._limit:
            self._opened += 1
            self._idle.put_nowait(await asyncio.open_connection(*self._address))
        reader, writer = await self._idle.get()
        try:
            kind = b"Content-Type: " + content_type + b"\r\n" if body else b""
            writer.write(
                f"{method} {path} HTTP/1.1\r\n".encode()
                + self._head
                + kind
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            return status, await reader.readexactly(length)
        finally:
            self._idle.put_nowait((reader, writer))

    async def close(self) -> None:
        while not self._idle.empty():
            _, writer = self._idle.get_nowait()
            writer.close()
