"""What the benchmarks share: percentiles, output, a throwaway schema and topics."""

from __future__ import annotations

import asyncio
import math
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from omnistock.bench import host
from omnistock.platform import db, kafka
from omnistock.platform.migrations import migrate, migrations_for
from omnistock.platform.settings import Settings

console = Console(stderr=True)


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
    return ordered[index]


def report(result: dict[str, Any], as_json: bool) -> None:
    table = Table(title=f"bench {result.get('bench', '')}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:,.2f}" if isinstance(value, float) else str(value))
    console.print(table)
    if as_json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        sys.stdout.flush()


def run_id() -> str:
    return uuid.uuid4().hex[:8]


async def fresh_schema(settings: Settings, schema: str, service: str, package: str) -> None:
    conn = await db.connect(settings.database_url, "public")
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {db.checked_identifier(schema)} CASCADE")
        await migrate(conn, schema, migrations_for(service, package))
    finally:
        await conn.close()


async def drop_schema(settings: Settings, schema: str) -> None:
    conn = await db.connect(settings.database_url, "public")
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {db.checked_identifier(schema)} CASCADE")
    finally:
        await conn.close()


def broker_warmth() -> dict[str, Any]:
    """How long ago the local stack's broker started (nothing when it does not run here), with
    a warning while it is young enough for its CPU figures to run high."""
    age = host.broker_age_s()
    if age is None:
        return {}
    if age < host.BROKER_WARM_S:
        console.print(
            f"[yellow]the local Kafka started {age:.0f} s ago: until its JVM has warmed up, "
            "Kafka's CPU per event runs high (three times as high seen)[/yellow]"
        )
    return {"kafka_started_s_ago": round(age)}


async def create_topics(settings: Settings, specs: list[kafka.TopicSpec]) -> None:
    await asyncio.to_thread(kafka.ensure_topics, settings, specs)


async def delete_topics(settings: Settings, names: list[str]) -> None:
    await asyncio.to_thread(kafka.delete_topics, settings, names)
