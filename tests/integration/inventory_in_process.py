"""An inventory app served in the test's own process, for tests that read its outbox."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import orjson

from omnistock.inventory.api import build_app
from omnistock.platform import db
from omnistock.platform.auth import mint_token
from omnistock.platform.clock import ManualClock
from omnistock.platform.migrations import migrate, migrations_for
from omnistock.platform.outbox import OutboxRelay
from omnistock.platform.settings import Settings

CSV = "text/csv"


@dataclass
class Inventory:
    settings: Settings
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    clock: ManualClock

    def token(self, *scopes: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_token(self.settings, 'erp', list(scopes))}"}

    async def bulk(
        self, body: bytes | AsyncIterator[bytes], content_type: str = CSV, source: str = "erp"
    ) -> httpx.Response:
        return await self.client.post(
            "/v1/stock/bulk",
            params={"source": source},
            content=body,
            headers={**self.token("inventory:write"), "Content-Type": content_type},
        )

    async def imported(self, body: bytes, content_type: str = CSV) -> dict[str, Any]:
        response = await self.bulk(body, content_type)
        assert response.status_code == 200, response.text
        report: dict[str, Any] = response.json()
        return report

    async def stock(self) -> dict[tuple[str, str], int]:
        rows = await self.pool.fetch("SELECT sku, location_id, on_hand FROM stock")
        return {(r["sku"], r["location_id"]): r["on_hand"] for r in rows}

    async def events(self, name: str) -> list[dict[str, Any]]:
        """The outbox's events of one type, oldest first (the relay is kept on standby)."""
        rows = await self.pool.fetch("SELECT payload FROM outbox ORDER BY id")
        envelopes = [orjson.loads(r["payload"]) for r in rows]
        return [e for e in envelopes if e["type"] == f"omnistock.inventory.{name}.v1"]


async def put_network(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """A warehouse and a store in Poland feeding one channel, warehouse first."""
    for location, kind in (("wh-1", "warehouse"), ("store-1", "store")):
        response = await client.put(
            f"/v1/locations/{location}",
            json={"kind": kind, "country": "PL", "name": location},
            headers=headers,
        )
        assert response.status_code == 200, response.text
    response = await client.put(
        "/v1/channels/brand-pl",
        json={
            "brand": "brand",
            "market": "PL",
            "sourcing": [
                {"location_id": "wh-1", "priority": 1},
                {"location_id": "store-1", "priority": 2},
            ],
        },
        headers=headers,
    )
    assert response.status_code == 200, response.text


@asynccontextmanager
async def inventory_in_process(settings: Settings) -> AsyncIterator[Inventory]:
    """The app in this process on a schema of its own, its clock manual, its relay on standby
    (the events a test causes stay in the outbox, where the test reads them), and a Polish
    warehouse and store feeding one channel."""
    schema = f"test_inventory_{uuid.uuid4().hex[:10]}"
    conn = await db.connect(settings.database_url, schema)
    try:
        await migrate(conn, schema, migrations_for("inventory", "omnistock.inventory"))
        # Holding the relay's leadership keeps the app's relay on standby: the events a test
        # causes stay in the outbox, where the test reads them.
        await conn.execute("SELECT pg_advisory_lock($1)", OutboxRelay(settings, schema).lock_key)
        clock = ManualClock(datetime(2026, 3, 2, 9, 0, tzinfo=UTC))
        app = build_app(settings, clock, schema=schema)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://inventory", timeout=60
            ) as client:
                inventory = Inventory(settings, client, app.state.runtime.pool, clock)
                await put_network(client, inventory.token("inventory:admin"))
                yield inventory
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
