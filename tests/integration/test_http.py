"""The app factory against the real database: auth on every route, problem+json, idempotency."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from omnistock.demo.api import build_app
from omnistock.platform.auth import mint_token
from omnistock.platform.http import PUBLIC_PATHS, endpoints
from omnistock.services import SERVICES
from tests.integration.conftest import Sandbox, read_topic, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(sandbox: Sandbox) -> AsyncIterator[httpx.AsyncClient]:
    app = build_app(
        sandbox.settings, schema=sandbox.schema, topic=sandbox.topic, group=sandbox.group
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


def bearer(sandbox: Sandbox, *scopes: str, subject: str = "client-1") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(sandbox.settings, subject, list(scopes))}"}


def concrete_path(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", path)


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_every_route_refuses_missing_or_wrong_credentials(
    sandbox: Sandbox, service: str
) -> None:
    """Walks every route of every service: no token → 401, a token without its scope → 403."""
    app: FastAPI = SERVICES[service].build_app(settings=sandbox.settings)
    transport = httpx.ASGITransport(app=app)  # no lifespan: auth is decided before any I/O
    routes = [e for e in endpoints(app) if e.path not in PUBLIC_PATHS]
    assert len(routes) > 1, "a service with no routes but /metrics?"
    operations = [op for path in app.openapi()["paths"].values() for op in path.values()]
    assert all(op.get("x-scopes") or op.get("x-signature") for op in operations), (
        "every operation documents its scopes (a webhook: its signature)"
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        for route in routes:
            signed = "x-signature" in (route.route.openapi_extra or {})
            for method in route.methods:
                path = concrete_path(route.path)
                anonymous = await client.request(method, path)
                assert anonymous.status_code == 401, f"{method} {path} without a token"
                assert anonymous.headers["content-type"] == "application/problem+json"
                garbage = await client.request(
                    method, path, headers={"Authorization": "Bearer x.y.z"}
                )
                assert garbage.status_code == 401, f"{method} {path} with a forged token"
                wrong = await client.request(
                    method, path, headers=bearer(sandbox, "nothing:useful")
                )
                if signed:  # a PSP webhook: no bearer token opens it, only a signature
                    assert wrong.status_code == 401, f"{method} {path} without a signature"
                    continue
                assert wrong.status_code == 403, f"{method} {path} with a wrong scope"
                assert "needs one of" in wrong.json()["detail"]


async def test_expired_and_foreign_tokens_are_refused(
    sandbox: Sandbox, client: httpx.AsyncClient
) -> None:
    expired = mint_token(sandbox.settings, "c", ["demo:read"], ttl_s=-10)
    response = await client.get(
        "/v1/pings/00000000-0000-0000-0000-000000000000",
        headers={"Authorization": f"Bearer {expired}"},
    )
    assert response.status_code == 401
    assert "expired" in response.json()["detail"].lower()
    foreign = sandbox.settings.model_copy(
        update={"jwt_secret": "another-issuers-secret-000000000000"}
    )
    forged = mint_token(foreign, "c", ["demo:read"])
    response = await client.get(
        "/v1/pings/00000000-0000-0000-0000-000000000000",
        headers={"Authorization": f"Bearer {forged}"},
    )
    assert response.status_code == 401


async def test_health_ready_and_metrics(sandbox: Sandbox, client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    metrics = await client.get("/metrics", headers=bearer(sandbox, "metrics:read"))
    assert metrics.status_code == 200
    assert "omnistock_http_request_seconds" in metrics.text
    assert (await client.get("/metrics")).status_code == 401


async def test_a_ping_flows_through_outbox_kafka_and_consumer(
    sandbox: Sandbox, client: httpx.AsyncClient
) -> None:
    response = await client.post(
        "/v1/pings",
        json={"stream": "web", "messages": ["hello", "world"]},
        headers={**bearer(sandbox, "demo:write"), "Idempotency-Key": "k-1"},
    )
    assert response.status_code == 201, response.text
    assert response.headers["x-request-id"]
    ping_id = response.json()["pings"][1]["ping_id"]
    read = bearer(sandbox, "demo:read")

    async def applied() -> bool:
        body = (await client.get(f"/v1/pings/{ping_id}", headers=read)).json()
        return bool(body["applied"])

    await wait_for(applied, what="the consumer to apply the ping")


async def test_the_callers_trace_context_travels_into_the_events_kafka_headers(
    sandbox: Sandbox, client: httpx.AsyncClient
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await client.post(
        "/v1/pings",
        json={"stream": "traced", "messages": ["hello"]},
        headers={
            **bearer(sandbox, "demo:write"),
            "Idempotency-Key": "traced-1",
            "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
        },
    )
    assert response.status_code == 201

    async def published() -> list[Any] | None:
        messages = await asyncio.to_thread(read_topic, sandbox.settings, sandbox.topic, 2)
        return messages or None

    (message,) = await wait_for(published, what="the event on the topic")
    headers = dict(message.headers())
    assert headers["content-type"].startswith(b"application/cloudevents+json")
    assert headers["traceparent"].decode().split("-")[1] == trace_id


async def test_a_repeated_idempotency_key_returns_the_first_answer_and_writes_nothing_more(
    sandbox: Sandbox, client: httpx.AsyncClient
) -> None:
    headers = {**bearer(sandbox, "demo:write"), "Idempotency-Key": "same-key"}
    body = {"stream": "app", "messages": ["one"]}
    first = await client.post("/v1/pings", json=body, headers=headers)
    second = await client.post("/v1/pings", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert await sandbox.pool.fetchval("SELECT count(*) FROM pings") == 1

    async def applied() -> bool:
        return bool(await sandbox.pool.fetchval("SELECT count(*) FROM pongs") == 1)

    await wait_for(applied, what="the one ping to be applied")
    published = await asyncio.to_thread(read_topic, sandbox.settings, sandbox.topic)
    assert len(published) == 1, "a replayed request must not publish its event again"
    reused = await client.post("/v1/pings", json={**body, "messages": ["two"]}, headers=headers)
    assert reused.status_code == 422
    assert reused.json()["errors"][0]["field"] == "header.Idempotency-Key"


async def test_bad_input_names_the_field_and_changes_nothing(
    sandbox: Sandbox, client: httpx.AsyncClient
) -> None:
    headers = {**bearer(sandbox, "demo:write"), "Idempotency-Key": "bad-1"}
    response = await client.post(
        "/v1/pings", json={"stream": "Not Valid!", "messages": []}, headers=headers
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"stream", "messages"}
    missing_key = await client.post(
        "/v1/pings", json={"stream": "ok", "messages": ["x"]}, headers=bearer(sandbox, "demo:write")
    )
    assert missing_key.status_code == 400
    assert missing_key.json()["errors"][0]["field"] == "header.Idempotency-Key"
    assert await sandbox.pool.fetchval("SELECT count(*) FROM pings") == 0
    assert await sandbox.pool.fetchval("SELECT count(*) FROM outbox") == 0
    assert await asyncio.to_thread(read_topic, sandbox.settings, sandbox.topic) == []


async def test_unknown_routes_answer_problem_json(
    sandbox: Sandbox, client: httpx.AsyncClient
) -> None:
    response = await client.get("/v1/nowhere", headers=bearer(sandbox, "demo:read"))
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
