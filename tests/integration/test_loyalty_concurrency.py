"""Holds under real concurrency: two replicas of the service as processes of their own, on one
schema, asked over TCP by many clients at once. The balance never goes below zero, nothing is
held twice, and the ledger adds up to the account."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from omnistock.contracts import orders
from omnistock.platform import db
from omnistock.platform.clock import ManualClock
from omnistock.platform.settings import Settings
from tests.integration.conftest import bearer, free_port, unique, wait_ready
from tests.integration.test_loyalty import (
    STAFF,
    Group,
    hold_body,
    keyed,
    loyalty_schema,
    loyalty_service,
    new_group,
    start_group_at_end,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def schema(settings: Settings) -> AsyncIterator[str]:
    async with loyalty_schema(settings) as schema:
        yield schema


@pytest.fixture
def group(settings: Settings) -> Group:
    return new_group(settings)


@contextmanager
def replicas(schema: str, group: str, count: int) -> Iterator[list[str]]:
    """``omnistock serve loyalty`` ``count`` times on ``schema``; their base URLs."""
    ports = [free_port() for _ in range(count)]
    env = {
        **os.environ,
        "OMNISTOCK_LOG_LEVEL": "WARNING",
        "OMNISTOCK_LOYALTY_ORDERS_GROUP": group,
    }
    command = [sys.executable, "-m", "omnistock.cli", "serve", "loyalty", "--schema", schema]
    processes = [
        subprocess.Popen(
            [*command, "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    try:
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


@asynccontextmanager
async def clients(settings: Settings, urls: list[str]) -> AsyncIterator[list[httpx.AsyncClient]]:
    for url in urls:
        await wait_ready(url)
    opened = [
        httpx.AsyncClient(
            base_url=url,
            headers=bearer(settings, "orders-saga", STAFF),
            timeout=60,
            limits=httpx.Limits(max_connections=100),
        )
        for url in urls
    ]
    try:
        yield opened
    finally:
        for client in opened:
            await client.aclose()


async def test_concurrent_holds_never_take_the_balance_below_zero(
    settings: Settings, schema: str, group: Group
) -> None:
    customer = unique("pat")
    async with loyalty_service(settings, schema, ManualClock(datetime.now(UTC)), group) as seed:
        await seed.earn(customer, 50_000)
        member = await seed.balance_reaches(customer, 500)
    member_id = member["member_id"]
    replica_group = unique("loyalty-orders")
    await asyncio.to_thread(start_group_at_end, settings, replica_group, orders.ORDERS.name)

    with replicas(schema, replica_group, 2) as urls:
        async with clients(settings, urls) as (first, second):
            # 40 orders ask for 30 points each at once, half of them at each replica: 1,200
            # points asked for, 500 there. Exactly 16 holds fit.
            bodies = [hold_body(customer, 30) for _ in range(40)]
            answers = await asyncio.gather(
                *(
                    (first if n % 2 else second).post("/v1/holds", json=body, headers=keyed())
                    for n, body in enumerate(bodies)
                )
            )
            assert Counter(a.status_code for a in answers) == {201: 16, 409: 24}
            for answer in answers:
                if answer.status_code == 409:
                    assert answer.json()["errors"][0]["field"] == "points", answer.text
            account = (await first.get(f"/v1/members/{member_id}")).json()
            assert (account["balance"], account["held"]) == (20, 480)

            # One order asked for ten times at once, under ten keys (a saga retrying while
            # its first call is still under way): one hold, the others find it.
            order_id = str(uuid.uuid4())
            same = hold_body(customer, 20, order_id)
            repeats = await asyncio.gather(
                *(
                    (first if n % 2 else second).post("/v1/holds", json=same, headers=keyed())
                    for n in range(10)
                )
            )
            assert sorted(a.status_code for a in repeats) == [200] * 9 + [201]
            assert {(a.json()["order_id"], a.json()["points"]) for a in repeats} == {(order_id, 20)}
            # Committing and releasing the same holds at once from both replicas: each hold
            # moves once, whichever comes first; the other answer is the same or a 409.
            held = [a.json()["order_id"] for a in answers if a.status_code == 201]
            moves = await asyncio.gather(
                *(
                    client.post(f"/v1/holds/{order}/{move}", headers=keyed())
                    for order in held
                    for client, move in ((first, "commit"), (second, "release"))
                )
            )
            assert {m.status_code for m in moves} <= {200, 409}
            account = (await second.get(f"/v1/members/{member_id}")).json()
            assert (account["balance"] + account["held"]) <= 500
            assert account["held"] == 20  # only the last order's hold is still held

    await assert_ledger_adds_up(settings, schema, member_id, account)


async def assert_ledger_adds_up(
    settings: Settings, schema: str, member_id: str, account: dict[str, Any]
) -> None:
    conn = await db.connect(settings.database_url, schema)
    try:
        totals = await conn.fetchrow(
            """SELECT sum(balance_change)::bigint AS balance, sum(held_change)::bigint AS held,
                      min(balance) AS lowest, count(*) AS entries, max(version) AS version
               FROM ledger WHERE member_id = $1""",
            member_id,
        )
        holds = await conn.fetch(
            "SELECT status, sum(points)::bigint AS points FROM holds WHERE member_id = $1"
            " GROUP BY status",
            member_id,
        )
    finally:
        await conn.close()
    assert totals is not None
    assert (totals["balance"], totals["held"]) == (account["balance"], account["held"])
    assert totals["lowest"] >= 0
    assert totals["entries"] == totals["version"] == account["version"]
    by_status = {row["status"]: row["points"] for row in holds}
    assert by_status.get("held", 0) == account["held"]
    spent = by_status.get("committed", 0)
    assert account["balance"] == 500 - spent - account["held"]
