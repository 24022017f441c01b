"""Idempotent writes on the real database: two requests with one key at the same moment get one
answer, even when the effect would refuse to run a second time."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from omnistock.platform import idempotency
from omnistock.platform.problems import Problem
from tests.integration.conftest import Sandbox

pytestmark = pytest.mark.integration


async def test_a_repeat_sent_while_the_first_is_under_way_gets_the_first_answer(
    sandbox: Sandbox,
) -> None:
    await sandbox.pool.execute("CREATE TABLE things (thing_id text PRIMARY KEY)")
    effects = 0

    async def create_thing(conn: asyncpg.Connection) -> tuple[int, Any]:
        nonlocal effects
        effects += 1
        if await conn.fetchval("SELECT 1 FROM things WHERE thing_id = 'a'"):
            # What a payment does for an order that has one already.
            raise Problem(409, "Conflict", "thing a exists", type_="conflict")
        await asyncio.sleep(0.3)  # the second request arrives meanwhile
        await conn.execute("INSERT INTO things VALUES ('a')")
        return 201, {"thing_id": "a"}

    fingerprint = idempotency.request_fingerprint("POST", "/things", {"thing_id": "a"})
    first, second = await asyncio.gather(
        *(
            idempotency.run_once(sandbox.pool, "client", "key-1", fingerprint, create_thing)
            for _ in range(2)
        )
    )
    assert {(first.status, first.replayed), (second.status, second.replayed)} == {
        (201, False),
        (201, True),
    }
    assert first.body == second.body == {"thing_id": "a"}
    assert effects == 1
    assert await sandbox.pool.fetchval("SELECT count(*) FROM things") == 1
