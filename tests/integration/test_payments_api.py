"""The payments API over HTTP on the real database and broker, against the in-process PSP
simulator and a manual clock: the money rules, declines, bad input, customers, webhooks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

import omnistock.contracts  # noqa: F401 - registers the event types
from omnistock.contracts.payments import PAYMENTS, TOPICS
from omnistock.payments.api import build_app
from omnistock.payments.signatures import SIGNATURE_HEADER, sign
from omnistock.payments.simulator import SimulatedPsp, SimulatorSettings, Webhook
from omnistock.platform import db, events, kafka
from omnistock.platform.clock import ManualClock
from omnistock.platform.settings import Settings
from tests.integration.conftest import (
    bearer,
    create_service_schema,
    drop_schema,
    end_offsets,
    read_topic_to_end,
    served,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)
SCOPES = ["payments:write", "payments:read"]


@asynccontextmanager
async def payments_schema(settings: Settings) -> AsyncIterator[str]:
    """A fresh schema with the service's tables, and its topic (which nothing else creates
    when the tests run on a fresh broker)."""
    await asyncio.to_thread(kafka.ensure_topics, settings, TOPICS)
    schema = await create_service_schema(settings, "payments", "omnistock.payments")
    try:
        yield schema
    finally:
        await drop_schema(settings, schema)


@asynccontextmanager
async def look_at(settings: Settings, schema: str) -> AsyncIterator[asyncpg.Pool]:
    """Our own look at the service's tables."""
    pool = await db.create_pool(settings.database_url, schema, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


def quick_clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    # Read by build_app: the scheduler and the recovery job look for work every 20 ms.
    monkeypatch.setenv("OMNISTOCK_PAYMENTS_SCHEDULER_INTERVAL_S", "0.02")
    monkeypatch.setenv("OMNISTOCK_PAYMENTS_RECOVERY_INTERVAL_S", "0.02")
    return ManualClock(T0)


def simulator(clock: ManualClock) -> SimulatedPsp:
    """The PSP, deterministic: decisions that come later come when a test says so."""
    return SimulatedPsp(clock, SimulatorSettings(async_decision_ms=None, seed=7))


@pytest.fixture
async def schema(settings: Settings) -> AsyncIterator[str]:
    async with payments_schema(settings) as schema:
        yield schema


@pytest.fixture
async def pool(settings: Settings, schema: str) -> AsyncIterator[asyncpg.Pool]:
    async with look_at(settings, schema) as pool:
        yield pool


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    return quick_clock(monkeypatch)


@pytest.fixture
def psp(clock: ManualClock) -> SimulatedPsp:
    return simulator(clock)


def payments(
    settings: Settings,
    clock: ManualClock,
    schema: str,
    psp: SimulatedPsp,
    scopes: list[str] = SCOPES,
    subject: str = "orders",
) -> AbstractAsyncContextManager[httpx.AsyncClient]:
    """The payments app, served in this process until the block ends."""
    app = build_app(settings, clock, schema=schema, psp=psp)
    return served(app, bearer(settings, subject, scopes))


def key() -> dict[str, str]:
    return {"Idempotency-Key": unique("key")}


async def create(
    client: httpx.AsyncClient,
    amount: int = 10_000,
    method: str = "card",
    customer: str = "customer-1",
    order: str | None = None,
) -> dict[str, Any]:
    body = {
        "order_id": order or unique("order"),
        "customer_id": customer,
        "method": method,
        "amount": amount,
        "currency": "PLN",
    }
    response = await client.post("/v1/payments", json=body, headers=key())
    assert response.status_code == 201, response.text
    payment: dict[str, Any] = response.json()
    assert payment["status"] == "created"
    return payment


async def call(
    client: httpx.AsyncClient,
    payment: dict[str, Any],
    action: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        f"/v1/payments/{payment['payment_id']}/{action}", json=body, headers=headers or key()
    )


async def authorized(
    client: httpx.AsyncClient, amount: int = 10_000, method: str = "card", **kwargs: Any
) -> dict[str, Any]:
    payment = await create(client, amount, method, **kwargs)
    response = await call(client, payment, "authorize", {"payment_method_token": "tok_visa"})
    assert response.status_code == 200, response.text
    assert response.json()["outcome"] == "succeeded"
    return dict(response.json()["payment"])


async def current(client: httpx.AsyncClient, payment: dict[str, Any]) -> dict[str, Any]:
    response = await client.get(f"/v1/payments/{payment['payment_id']}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def deliver(client: httpx.AsyncClient, psp: SimulatedPsp, hooks: list[Webhook]) -> list[str]:
    """Post webhooks as the PSP would, each signed now; returns what the service did."""
    results = []
    for hook in hooks:
        response = await client.post(
            "/v1/psp/webhooks", content=hook.body, headers=psp.signed_headers(hook)
        )
        assert response.status_code == 200, response.text
        results.append(response.json()["result"])
    return results


async def published(
    settings: Settings, pool: asyncpg.Pool, payment_id: str, start: dict[int, int]
) -> list[events.Event[Any]]:
    """The events of one payment that reached the topic, once the relay has sent everything."""
    await wait_for(
        lambda: pool.fetchval("SELECT NOT EXISTS (SELECT FROM outbox)"), 20, what="the relay"
    )
    messages = await asyncio.to_thread(read_topic_to_end, settings, PAYMENTS.name, 20, start)
    found = [(m.key(), events.decode(m.value())) for m in messages]
    return [e for k, e in found if e is not None and e.subject == payment_id and k]


async def test_captures_in_parts_never_exceed_the_authorization_nor_refunds_the_captures(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool, psp: SimulatedPsp
) -> None:
    start = await asyncio.to_thread(end_offsets, settings, PAYMENTS.name)
    async with payments(settings, clock, schema, psp) as client:
        payment = await authorized(client, 10_000)
        assert (payment["status"], payment["authorized"], payment["capturable"]) == (
            "authorized",
            10_000,
            10_000,
        )
        first = await call(client, payment, "captures", {"amount": 4_000})
        assert first.json()["outcome"] == "succeeded", first.text
        version = (await current(client, payment))["version"]
        too_much = await call(client, payment, "captures", {"amount": 6_001})
        assert too_much.status_code == 422
        assert too_much.headers["content-type"] == "application/problem+json"
        assert too_much.json()["errors"] == [
            {"field": "amount", "message": "at most 6000 can still be captured"}
        ]
        assert (await current(client, payment))["version"] == version, "a refusal writes nothing"
        rest = await call(client, payment, "captures", {"amount": 6_000})
        assert rest.json()["payment"]["status"] == "settled"
        after = await call(client, payment, "captures", {"amount": 1})
        assert after.status_code == 409
        assert after.json()["errors"][0]["field"] == "status"

        assert (await call(client, payment, "refunds", {"amount": 7_000})).status_code == 200
        over = await call(client, payment, "refunds", {"amount": 3_001})
        assert over.status_code == 422
        assert over.json()["errors"][0]["field"] == "amount"
        last = await call(client, payment, "refunds", {"amount": 3_000})
        assert last.json()["outcome"] == "succeeded"
        # 7,000 came from the first capture (4,000) and the second; so did the last 3,000.
        final = last.json()["payment"]
        assert (final["status"], final["captured"], final["refunded"]) == (
            "refunded",
            10_000,
            10_000,
        )
        found = await current(client, payment)
        # While the service (and so its relay) still runs: it stops with the block.
        sent = await published(settings, pool, payment["payment_id"], start)
    pid = payment["payment_id"]
    assert (psp.captured(pid), psp.refunded(pid)) == (10_000, 10_000)
    versions = [h["version"] for h in found["history"]]
    assert versions == list(range(1, found["version"] + 1)), "every change has its version"
    assert [e.aggregate_version for e in sent] == versions
    assert [e.type.split(".")[2] for e in sent if "requested" not in e.type] == [
        "payment-created",
        "payment-authorized",
        "payment-captured",
        "payment-captured",
        "payment-refunded",
        "payment-refunded",
        "payment-refunded",
    ]
    assert {e.correlation_id for e in sent} == {payment["order_id"]}


async def test_a_declined_authorization_ends_the_payment_and_frees_the_order(
    settings: Settings, clock: ManualClock, schema: str, psp: SimulatedPsp
) -> None:
    async with payments(settings, clock, schema, psp) as client:
        payment = await create(client)
        response = await call(
            client, payment, "authorize", {"payment_method_token": "tok_insufficient_funds"}
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["outcome"] == "declined"
        assert answer["operations"][0]["reason"] == "insufficient_funds"
        assert answer["payment"]["status"] == "declined"
        capture = await call(client, payment, "captures", {"amount": 1})
        assert capture.status_code == 409
        # The order may try again with another payment; while that one is in play, no third.
        again = await create(client, order=payment["order_id"])
        body = {**again, "amount": 1}
        third = await client.post(
            "/v1/payments",
            json={k: body[k] for k in ("order_id", "customer_id", "method", "amount", "currency")},
            headers=key(),
        )
        assert third.status_code == 409
        assert third.json()["errors"][0]["field"] == "order_id"
    assert psp.authorizations_of(payment["payment_id"]) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": 12.5}, "amount"),
        ({"amount": "1000"}, "amount"),
        ({"amount": 0}, "amount"),
        ({"currency": "pln"}, "currency"),
        ({"currency": "XXX"}, "currency"),
        ({"method": "cash"}, "method"),
        ({"order_id": ""}, "order_id"),
        ({"authorize": {"payment_method_token": "4111 1111"}}, "authorize.payment_method_token"),
    ],
)
async def test_bad_input_names_the_field_and_writes_nothing(
    settings: Settings,
    clock: ManualClock,
    schema: str,
    pool: asyncpg.Pool,
    psp: SimulatedPsp,
    body: dict[str, Any],
    field: str,
) -> None:
    good = {
        "order_id": "o-1",
        "customer_id": "c-1",
        "method": "card",
        "amount": 1_000,
        "currency": "PLN",
    }
    async with payments(settings, clock, schema, psp) as client:
        response = await client.post("/v1/payments", json={**good, **body}, headers=key())
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert field in {e["field"] for e in response.json()["errors"]}
        no_key = await client.post("/v1/payments", json=good)
        assert no_key.status_code == 400
        assert no_key.json()["errors"][0]["field"] == "header.Idempotency-Key"
        missing = await client.post(
            "/v1/payments/00000000-0000-0000-0000-000000000000/captures",
            json={"amount": 1},
            headers=key(),
        )
        assert missing.status_code == 404
    counts = await pool.fetchrow(
        """SELECT (SELECT count(*) FROM payments) AS payments,
                  (SELECT count(*) FROM payment_operations) AS operations,
                  (SELECT count(*) FROM outbox) AS outbox,
                  (SELECT count(*) FROM idempotency_keys) AS keys"""
    )
    assert dict(counts) == {"payments": 0, "operations": 0, "outbox": 0, "keys": 0}


async def test_a_repeated_request_is_done_once_and_answered_alike(
    settings: Settings, clock: ManualClock, schema: str, psp: SimulatedPsp
) -> None:
    async with payments(settings, clock, schema, psp) as client:
        payment = await authorized(client)
        headers = key()
        first = await call(client, payment, "captures", {"amount": 2_500}, headers)
        second = await call(client, payment, "captures", {"amount": 2_500}, headers)
        assert first.status_code == second.status_code == 200
        assert second.headers["idempotent-replayed"] == "true"
        assert first.json()["operations"] == second.json()["operations"]
        reused = await call(client, payment, "captures", {"amount": 100}, headers)
        assert reused.status_code == 422
        assert reused.json()["errors"][0]["field"] == "header.Idempotency-Key"
        assert (await current(client, payment))["captured"] == 2_500
    assert psp.calls["capture"] == 1
    assert psp.captured(payment["payment_id"]) == 2_500


async def test_one_request_creates_the_payment_and_asks_for_its_authorization(
    settings: Settings, clock: ManualClock, schema: str, psp: SimulatedPsp
) -> None:
    def body(token: str, method: str = "card") -> dict[str, Any]:
        return {
            "order_id": unique("order"),
            "customer_id": "customer-1",
            "method": method,
            "amount": 7_000,
            "currency": "PLN",
            "authorize": {"payment_method_token": token},
        }

    async with payments(settings, clock, schema, psp) as client:
        card, headers = body("tok_visa"), key()
        first = await client.post("/v1/payments", json=card, headers=headers)
        assert first.status_code == 201, first.text
        paid = first.json()
        assert (paid["status"], paid["authorized"], paid["authorization"]["outcome"]) == (
            "authorized",
            7_000,
            "succeeded",
        )
        again = await client.post("/v1/payments", json=card, headers=headers)
        assert (again.status_code, again.headers["idempotent-replayed"]) == (201, "true")
        assert again.json()["payment_id"] == paid["payment_id"]
        assert again.json()["authorization"] == paid["authorization"]
        # The same key for the creation alone is another request.
        alone = {k: v for k, v in card.items() if k != "authorize"}
        reused = await client.post("/v1/payments", json=alone, headers=headers)
        assert reused.status_code == 422
        assert reused.json()["errors"][0]["field"] == "header.Idempotency-Key"

        refused = await client.post(
            "/v1/payments", json=body("tok_insufficient_funds"), headers=key()
        )
        assert refused.status_code == 201, refused.text
        declined = refused.json()
        assert (declined["status"], declined["authorization"]["outcome"]) == (
            "declined",
            "declined",
        )
        assert declined["authorization"]["operations"][0]["reason"] == "insufficient_funds"

        # Decided later by the PSP: the same request again follows it up.
        later, headers = body("tok_async", "pay_later"), key()
        asked = await client.post("/v1/payments", json=later, headers=headers)
        assert asked.status_code == 201, asked.text
        assert (asked.json()["status"], asked.json()["authorization"]["outcome"]) == (
            "authorizing",
            "pending",
        )
        psp.decide_pending()
        followed = await client.post("/v1/payments", json=later, headers=headers)
        assert (followed.json()["status"], followed.json()["authorization"]["outcome"]) == (
            "authorized",
            "succeeded",
        )
    # One authorization at the PSP per payment it approved, whatever was asked again.
    approved = [len(psp.authorizations_of(p["payment_id"])) for p in (paid, declined, asked.json())]
    assert approved == [1, 0, 1]


async def test_a_customer_sees_only_its_own_payments(
    settings: Settings, clock: ManualClock, schema: str, psp: SimulatedPsp
) -> None:
    async with payments(settings, clock, schema, psp) as client:
        mine = await create(client, customer="alice")
    path = f"/v1/payments/{mine['payment_id']}"
    alice = bearer(settings, "alice", ["customer"])
    bob = bearer(settings, "bob", ["customer"])
    async with payments(settings, clock, schema, psp, ["customer"], "alice") as client:
        assert (await client.get(path, headers=alice)).json()["customer_id"] == "alice"
        theirs = await client.get(path, headers=bob)
        assert theirs.status_code == 404, "another customer's payment does not exist for bob"
        listed = await client.get(
            "/v1/payments", params={"order_id": mine["order_id"]}, headers=bob
        )
        assert listed.json()["payments"] == []
        own = await client.get("/v1/payments", params={"order_id": mine["order_id"]}, headers=alice)
        assert [p["payment_id"] for p in own.json()["payments"]] == [mine["payment_id"]]
        write = await client.post(f"{path}/void", headers={**alice, **key()})
        assert write.status_code == 403


async def test_webhooks_delivered_twice_and_out_of_order_change_nothing_more(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool, psp: SimulatedPsp
) -> None:
    async with payments(settings, clock, schema, psp) as client:
        # A pay-later approval that the PSP decides later and announces by webhook.
        payment = await create(client, 9_000, "pay_later")
        pending = await call(client, payment, "authorize", {"payment_method_token": "tok_async"})
        assert pending.status_code == 202
        assert pending.json()["outcome"] == "pending"
        psp.decide_pending()
        assert await deliver(client, psp, psp.take_webhooks()) == ["applied"]
        assert (await current(client, payment))["status"] == "authorized"
        # Two captures whose answers are lost: the PSP did them, the service does not know.
        from omnistock.payments.simulator import Fault

        psp.inject(Fault.TIMEOUT_AFTER, "capture", times=2)
        for amount in (2_000, 3_000):
            lost = await call(client, payment, "captures", {"amount": amount})
            assert lost.status_code == 202
        hooks = psp.take_webhooks()
        assert len(hooks) == 2
        # Newest first, each twice: each decision applies once.
        results = await deliver(client, psp, [*reversed(hooks), *hooks])
        assert results == ["applied", "applied", "duplicate", "duplicate"]
        settled = await current(client, payment)
        assert (settled["captured"], settled["capture_pending"]) == (5_000, 0)
        # The same decisions announced again under new event ids, late: nothing changes.
        for hook in hooks:
            again = json.loads(hook.body)
            again["id"] = unique("evt")
            late = Webhook(again["id"], json.dumps(again).encode())
            assert await deliver(client, psp, [late]) == ["ignored"]
        assert (await current(client, payment))["version"] == settled["version"]
    assert psp.captured(payment["payment_id"]) == 5_000
    assert await pool.fetchval("SELECT count(*) FROM psp_webhooks") == 5


@pytest.mark.parametrize(
    "tamper",
    ["no signature", "wrong secret", "changed body", "stale", "bearer instead"],
)
async def test_a_webhook_without_a_good_signature_is_refused(
    settings: Settings,
    clock: ManualClock,
    schema: str,
    pool: asyncpg.Pool,
    psp: SimulatedPsp,
    tamper: str,
) -> None:
    body = json.dumps(
        {"id": "evt_1", "type": "authorization.expired", "created_at": T0.isoformat()}
    ).encode()
    now = int(clock.now().timestamp())
    secret = psp.settings.webhook_secret
    headers = {
        "no signature": {},
        "wrong secret": {SIGNATURE_HEADER: sign("not-the-secret", body, now)},
        "changed body": {SIGNATURE_HEADER: sign(secret, body.replace(b"1", b"2"), now)},
        "stale": {SIGNATURE_HEADER: sign(secret, body, now - 3600)},
        "bearer instead": bearer(settings, "psp", ["payments:write"]),
    }[tamper]
    async with payments(settings, clock, schema, psp) as client:
        response = await client.post("/v1/psp/webhooks", content=body, headers=headers)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == "application/problem+json"
        good = await client.post(
            "/v1/psp/webhooks", content=body, headers={SIGNATURE_HEADER: sign(secret, body, now)}
        )
        assert good.json()["result"] == "ignored"  # about no payment of ours
    assert await pool.fetchval("SELECT count(*) FROM psp_webhooks") == 1


async def test_the_simulator_inside_the_service_posts_its_webhooks_to_the_service(
    settings: Settings,
    clock: ManualClock,
    schema: str,
    pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a PSP URL the service runs the simulator itself (development, the benchmarks)
    and hands each webhook straight to its own endpoint, signature check and all."""
    monkeypatch.delenv("OMNISTOCK_PAYMENTS_PSP_URL", raising=False)
    app = build_app(settings, clock, schema=schema)
    async with served(app, bearer(settings, "orders", SCOPES)) as client:
        created = await client.post(
            "/v1/payments",
            json={
                "order_id": unique("order"),
                "customer_id": "customer-1",
                "method": "card",
                "amount": 4_000,
                "currency": "PLN",
                "authorize": {"payment_method_token": "tok_visa"},
            },
            headers=key(),
        )
        assert created.status_code == 201, created.text

        async def announced() -> bool:
            results = await pool.fetch("SELECT result FROM psp_webhooks")
            return [r["result"] for r in results] == ["ignored"]

        # The decision came with the answer; its webhook, signed, finds nothing left to do.
        await wait_for(announced, 20, what="the simulator's webhook")
        forged = await client.post(
            "/v1/psp/webhooks", content=b'{"id": "x"}', headers={"content-type": "application/json"}
        )
        assert forged.status_code == 401, forged.text
