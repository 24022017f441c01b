"""The saga's payment step against the payments service on the real database: one request
creates the payment and asks for its authorization, and orders and payments from before that
request still meet (a payment created in two requests, a service that only creates)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import asyncpg
import httpx
import pytest

from omnistock.orders import saga
from omnistock.orders.domain import CancelReason
from omnistock.orders.participants import Participants
from omnistock.orders.settings import OrdersSettings
from omnistock.platform.client import Answer, ServiceClient
from omnistock.platform.clock import ManualClock
from omnistock.platform.settings import Settings
from tests.integration.test_payments_api import (
    T0,
    look_at,
    payments,
    payments_schema,
    simulator,
)

pytestmark = pytest.mark.integration

Rewrite = Callable[[str, dict[str, Any] | None], dict[str, Any] | None]


class InProcess(ServiceClient):
    """The service served in this process; ``rewrite`` sees each (path, body) as sent."""

    def __init__(self, client: httpx.AsyncClient, rewrite: Rewrite = lambda _p, body: body):
        super().__init__("http://service", 5.0)
        self.client, self.rewrite, self.sent = client, rewrite, list[str]()

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        self.sent.append(f"{method} {path}")
        response = await self.client.request(
            method, path, json=self.rewrite(path, json), headers=dict(headers or {})
        )
        return Answer(response.status_code, response.content, response.headers, method, path)


@pytest.fixture
async def schema(settings: Settings) -> AsyncIterator[str]:
    async with payments_schema(settings) as schema:
        yield schema


def order(card: str = "tok_visa") -> saga.SagaOrder:
    return saga.SagaOrder(
        order_id=str(uuid.uuid4()),
        customer_id="customer-1",
        reservation_id=str(uuid.uuid4()),
        payment_method="card",
        payment_token=card,
        total=5_998,
        currency="PLN",
        cancel_reason=None,
    )


async def payments_of(pool: asyncpg.Pool, order_id: str) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT payment_id::text, status FROM payments WHERE order_id = $1", order_id
    )
    return [(row["payment_id"], row["status"]) for row in rows]


async def test_one_request_pays_and_older_peers_still_meet(settings: Settings, schema: str) -> None:
    clock = ManualClock(T0)
    psp = simulator(clock)
    participants = Participants(settings, OrdersSettings())
    async with (
        payments(settings, clock, schema, psp) as client,
        look_at(settings, schema) as pool,
    ):
        participants.payments = service = InProcess(client)
        fresh = order()
        done = await saga.authorize_payment(participants, fresh)
        assert isinstance(done, saga.Done), done
        assert service.sent == ["POST /v1/payments"]
        assert await payments_of(pool, fresh.order_id) == [(done.facts["payment_id"], "authorized")]

        # Created by an orders instance from before the single request, then not authorized.
        earlier = order()
        created = await client.post(
            "/v1/payments",
            json=saga.payment_body(earlier),
            headers={"Idempotency-Key": f"order:{earlier.order_id}:create-payment"},
        )
        assert created.status_code == 201, created.text
        done = await saga.authorize_payment(participants, earlier)
        assert isinstance(done, saga.Done), done
        assert done.facts["payment_id"] == created.json()["payment_id"]
        assert await payments_of(pool, earlier.order_id) == [
            (created.json()["payment_id"], "authorized")
        ]

        # A payments service from before the single request: it creates, and no more.
        def older(path: str, body: dict[str, Any] | None) -> dict[str, Any] | None:
            if path == "/v1/payments" and body is not None:
                return {k: v for k, v in body.items() if k != "authorize"}
            return body

        participants.payments = service = InProcess(client, older)
        old_peer = order()
        done = await saga.authorize_payment(participants, old_peer)
        assert isinstance(done, saga.Done), done
        assert service.sent[-1].endswith("/authorize")
        assert await payments_of(pool, old_peer.order_id) == [
            (done.facts["payment_id"], "authorized")
        ]

        participants.payments = InProcess(client)
        declined = await saga.authorize_payment(participants, order("tok_insufficient_funds"))
        assert isinstance(declined, saga.Refused), declined
        assert declined.reason is CancelReason.PAYMENT_DECLINED
        assert "insufficient_funds" in declined.detail
    await participants.close()
