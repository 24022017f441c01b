"""The payments service and the PSP simulator as processes of their own, over HTTP: webhooks
signed, delivered twice and shuffled; a capture whose answer the network loses."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from omnistock.payments.psp import DEVELOPMENT_PSP_API_KEY
from omnistock.platform.settings import Settings
from tests.integration.conftest import bearer, free_port, unique, wait_for, wait_ready
from tests.integration.test_payments_api import look_at, payments_schema

pytestmark = pytest.mark.integration
PSP_HEADERS = {"Authorization": f"Bearer {DEVELOPMENT_PSP_API_KEY}"}


@pytest.fixture
async def schema(settings: Settings) -> AsyncIterator[str]:
    async with payments_schema(settings) as schema:
        yield schema


@pytest.fixture
async def pool(settings: Settings, schema: str) -> AsyncIterator[asyncpg.Pool]:
    async with look_at(settings, schema) as pool:
        yield pool


@pytest.fixture
def stack(schema: str) -> Iterator[tuple[str, str]]:
    """(payments URL, simulator URL), each its own process."""
    payments_port, psp_port = free_port(), free_port()
    payments_url, psp_url = f"http://127.0.0.1:{payments_port}", f"http://127.0.0.1:{psp_port}"
    env = {
        **os.environ,
        "OMNISTOCK_LOG_LEVEL": "WARNING",
        "OMNISTOCK_PSP_SIM_WEBHOOK_DUPLICATES": "true",
        "OMNISTOCK_PSP_SIM_WEBHOOK_SHUFFLE": "true",
        "OMNISTOCK_PSP_SIM_ASYNC_DECISION_MS": "100",
        "OMNISTOCK_PAYMENTS_PSP_URL": psp_url,
        "OMNISTOCK_PAYMENTS_PSP_TIMEOUT_S": "2",
    }
    command = [sys.executable, "-m", "omnistock.cli"]
    webhooks = f"{payments_url}/v1/psp/webhooks"
    started = [
        subprocess.Popen(
            [*command, "payments", "psp-sim", "--port", str(psp_port), "--webhook-url", webhooks],
            env=env,
            stdout=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [*command, "serve", "payments", "--port", str(payments_port), "--schema", schema],
            env=env,
            stdout=subprocess.DEVNULL,
        ),
    ]
    try:
        yield payments_url, psp_url
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


async def test_a_pay_later_payment_through_the_simulator_server(
    settings: Settings, stack: tuple[str, str], pool: asyncpg.Pool
) -> None:
    payments_url, psp_url = stack
    await wait_ready(payments_url)
    headers = bearer(settings, "orders", ["payments:write", "payments:read"])
    async with (
        httpx.AsyncClient(base_url=payments_url, headers=headers, timeout=30) as client,
        httpx.AsyncClient(base_url=psp_url, headers=PSP_HEADERS, timeout=10) as psp,
    ):
        created = await client.post(
            "/v1/payments",
            json={
                "order_id": unique("order"),
                "customer_id": "c-1",
                "method": "pay_later",
                "amount": 4_999,
                "currency": "EUR",
            },
            headers={"Idempotency-Key": unique("k")},
        )
        assert created.status_code == 201, created.text
        path = f"/v1/payments/{created.json()['payment_id']}"

        async def post(action: str, body: Any, key: str | None = None) -> httpx.Response:
            idempotency = {"Idempotency-Key": key or unique("k")}
            return await client.post(f"{path}/{action}", json=body, headers=idempotency)

        async def status(expected: str) -> bool:
            return bool((await client.get(path)).json()["status"] == expected)

        # Decided 100 ms later, announced by a webhook that comes twice.
        pending = await post("authorize", {"payment_method_token": "tok_async"})
        assert pending.status_code == 202, pending.text
        await wait_for(lambda: status("authorized"), 20, what="the webhook's decision")

        fault = {"fault": "timeout-after", "operation": "capture"}
        assert (await psp.post("/sim/faults", json=fault)).status_code == 200
        lost = await post("captures", {"amount": 3_000}, key="capture-1")
        assert lost.status_code == 202, lost.text
        again = await post("captures", {"amount": 3_000}, key="capture-1")
        assert again.json()["outcome"] == "succeeded", again.text
        refund = await post("refunds", {"amount": 1_000})
        assert refund.json()["outcome"] == "succeeded", refund.text

        async def webhooks_in() -> bool:
            seen = await pool.fetch("SELECT result FROM psp_webhooks")
            return len(seen) == 3  # decision, capture, refund: each once however often sent

        await wait_for(webhooks_in, 20, what="every webhook")
        final = (await client.get(path)).json()
        held = (await psp.get(f"/sim/payments/{final['payment_id']}")).json()
    assert (final["status"], final["captured"], final["refunded"]) == ("authorized", 3_000, 1_000)
    assert (held["captured"], held["refunded"], held["held"]) == (3_000, 1_000, 1_999)
    assert len(held["authorizations"]) == 1
