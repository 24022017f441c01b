"""``omnistock demo``: the platform at work, as an operator would watch it.

Starts the demo service as its own process, sends pings through its HTTP API, kills the service
with SIGKILL halfway and starts it again, then proves that every accepted ping was published and
applied exactly once, with the latency from request to effect.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field

import asyncpg
import httpx
from rich.console import Console
from rich.live import Live
from rich.table import Table

from omnistock.demo import SERVICE
from omnistock.platform import db
from omnistock.platform.auth import mint_token
from omnistock.platform.children import free_ports
from omnistock.platform.settings import Settings, get_settings

console = Console()
PER_REQUEST = 20


@dataclass
class Tally:
    accepted: int = 0
    refused: int = 0
    retried: int = 0
    restarts: int = 0
    outage_s: float = 0.0
    published: int = 0
    applied: int = 0
    notes: list[str] = field(default_factory=list)


def start_service(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "omnistock.cli", "serve", SERVICE, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMNISTOCK_LOG_LEVEL": "WARNING"},
    )


async def wait_ready(client: httpx.AsyncClient, timeout_s: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if (await client.get("/readyz")).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("the demo service did not become ready; see `omnistock serve demo`")


def render(tally: Tally, total: int) -> Table:
    table = Table(title="omnistock demo: API → outbox → Kafka → consumer (inbox)")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("pings requested", f"{total:,}")
    table.add_row("accepted by the API (201)", f"{tally.accepted:,}")
    table.add_row("published by the relay", f"{tally.published:,}")
    table.add_row("applied by the consumer", f"{tally.applied:,}")
    table.add_row("service kill -9 and restarts", f"{tally.restarts}")
    return table


async def run(settings: Settings, total: int) -> Tally:
    (port,) = free_ports(1)
    token = mint_token(settings, "demo-client", ["demo:write", "demo:read"])
    tally = Tally()
    process = start_service(port)
    pool = await db.create_pool(settings.database_url, SERVICE, min_size=1, max_size=2)
    baseline = await counts(pool)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as client:
            await wait_ready(client)
            requests = max(1, total // PER_REQUEST)
            with Live(render(tally, total), console=console, refresh_per_second=8) as live:
                for n in range(requests):
                    down = None
                    if n == requests // 2:
                        # Traffic keeps coming: the client retries with the same key until the
                        # restarted service answers, as a storefront would.
                        process.send_signal(signal.SIGKILL)
                        process.wait()
                        down = time.monotonic()
                        process = start_service(port)
                        tally.restarts += 1
                    await send(client, f"stream-{n % 8}", tally)
                    if down is not None:
                        tally.outage_s = time.monotonic() - down
                    if n % 5 == 0:
                        await update(pool, tally, baseline)
                        live.update(render(tally, total))
                deadline = time.monotonic() + 60
                while tally.applied < tally.accepted and time.monotonic() < deadline:
                    await update(pool, tally, baseline)
                    live.update(render(tally, total))
                    await asyncio.sleep(0.1)
                await update(pool, tally, baseline)
                live.update(render(tally, total))
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
        await pool.close()
    return tally


async def send(client: httpx.AsyncClient, stream: str, tally: Tally) -> None:
    key = str(uuid.uuid4())
    body = {"stream": stream, "messages": [f"hello {i}" for i in range(PER_REQUEST)]}
    for _attempt in range(100):
        try:
            response = await client.post("/v1/pings", json=body, headers={"Idempotency-Key": key})
        except httpx.TransportError:
            tally.retried += 1  # the same key: a retry can never send the pings twice
            await asyncio.sleep(0.1)
            continue
        if response.status_code == 201:
            if response.headers.get("idempotent-replayed") != "true":
                tally.accepted += PER_REQUEST
            return
        tally.refused += PER_REQUEST
        tally.notes.append(response.text)
        return


async def counts(pool: asyncpg.Pool) -> dict[str, int]:
    row = await pool.fetchrow(
        """SELECT (SELECT count(*) FROM pings) AS pings,
                  (SELECT count(*) FROM outbox) AS unpublished,
                  (SELECT count(*) FROM pongs) AS applied"""
    )
    return dict(row)


async def update(pool: asyncpg.Pool, tally: Tally, baseline: dict[str, int]) -> None:
    now = await counts(pool)
    # Each ping has one event; it has left the outbox once Kafka acknowledged it.
    tally.published = now["pings"] - baseline["pings"] - now["unpublished"]
    tally.applied = now["applied"] - baseline["applied"]


def run_demo(total: int) -> None:
    settings = get_settings()
    tally = asyncio.run(run(settings, total))
    console.print()
    summary = Table(title="summary")
    summary.add_column("check")
    summary.add_column("result")
    ok = tally.applied == tally.accepted and tally.refused == 0
    summary.add_row("pings accepted", f"{tally.accepted:,}")
    summary.add_row("pings applied exactly once", f"{tally.applied:,}")
    summary.add_row("lost", str(tally.accepted - tally.applied))
    summary.add_row("service outage (kill -9 → next request served)", f"{tally.outage_s:.1f} s")
    summary.add_row("requests retried meanwhile", f"{tally.retried:,}")
    summary.add_row("verdict", "[green]nothing lost, nothing doubled" if ok else "[red]MISMATCH")
    console.print(summary)
    if not ok:
        raise SystemExit(1)
