"""The simulated PSP over HTTP, for end-to-end runs: ``omnistock payments psp-sim``.

The PSP API (bearer: the simulator's API key; writes need an ``Idempotency-Key``):
``POST /v1/authorizations``, ``POST /v1/authorizations/{ref}/captures``,
``POST /v1/authorizations/{ref}/void``, ``POST /v1/captures/{ref}/refunds``,
``GET /v1/requests/{key}`` (what became of a key; 404: never received). A lost request or answer
is a 504. Knobs for a test run: ``POST /sim/faults`` ``{"fault": "timeout-after", "operation":
"capture", "times": 1}``, ``POST /sim/decide`` (pending decisions now), ``POST /sim/expire``
(lapse due authorizations), ``GET /sim/payments/{merchant_reference}`` (what the PSP holds).
Webhooks go to ``OMNISTOCK_PSP_SIM_WEBHOOK_URL``, signed, retried until answered 2xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from omnistock.payments.psp import AuthorizationRequest, PspResult, PspUnavailable, result_body
from omnistock.payments.simulator.core import Fault, SimulatedPsp, SimulatorSettings
from omnistock.platform.clock import Clock, SystemClock

Amount = Annotated[int, Field(strict=True, ge=1)]


class AuthorizationIn(BaseModel):
    merchant_reference: str
    amount: Amount
    currency: str
    method: str
    payment_method_token: str


class AmountIn(BaseModel):
    amount: Amount
    currency: str


class FaultIn(BaseModel):
    fault: Fault
    operation: str | None = None
    times: int = Field(default=1, ge=1)


def build_simulator_app(
    settings: SimulatorSettings | None = None, clock: Clock | None = None
) -> FastAPI:
    settings = settings or SimulatorSettings()
    sim = SimulatedPsp(clock or SystemClock(), settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(_expire_every_second(sim, stop))]
        client = httpx.AsyncClient(timeout=10)
        if settings.webhook_url:
            url = settings.webhook_url

            async def post(body: bytes, headers: dict[str, str]) -> int:
                return (await client.post(url, content=body, headers=headers)).status_code

            tasks.append(asyncio.create_task(sim.deliver_webhooks(post, stop)))
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.aclose()

    app = FastAPI(title="omnistock PSP simulator", lifespan=lifespan, openapi_url=None)
    app.state.sim = sim

    def authenticated(authorization: Annotated[str | None, Header()] = None) -> None:
        expected = f"Bearer {settings.api_key}"
        if authorization is None or not hmac.compare_digest(authorization, expected):
            raise HTTPException(401, "a bearer API key is required")

    guarded = [Depends(authenticated)]

    async def answer(call: Callable[[], Awaitable[PspResult]]) -> JSONResponse:
        try:
            return JSONResponse(result_body(await call()))
        except PspUnavailable as exc:
            return JSONResponse({"error": str(exc)}, status_code=504)

    @app.post("/v1/authorizations", dependencies=guarded)
    async def authorize(
        body: AuthorizationIn, idempotency_key: Annotated[str, Header()]
    ) -> JSONResponse:
        request = AuthorizationRequest(idempotency_key, **body.model_dump())
        return await answer(lambda: sim.authorize(request))

    @app.post("/v1/authorizations/{reference}/captures", dependencies=guarded)
    async def capture(
        reference: str, body: AmountIn, idempotency_key: Annotated[str, Header()]
    ) -> JSONResponse:
        return await answer(
            lambda: sim.capture(idempotency_key, reference, body.amount, body.currency)
        )

    @app.post("/v1/authorizations/{reference}/void", dependencies=guarded)
    async def void(reference: str, idempotency_key: Annotated[str, Header()]) -> JSONResponse:
        return await answer(lambda: sim.void(idempotency_key, reference))

    @app.post("/v1/captures/{reference}/refunds", dependencies=guarded)
    async def refund(
        reference: str, body: AmountIn, idempotency_key: Annotated[str, Header()]
    ) -> JSONResponse:
        return await answer(
            lambda: sim.refund(idempotency_key, reference, body.amount, body.currency)
        )

    @app.get("/v1/requests/{key}", dependencies=guarded)
    async def lookup(key: str) -> JSONResponse:
        result = await sim.lookup(key)
        if result is None:
            return JSONResponse({"error": "no request with this key"}, status_code=404)
        return JSONResponse(result_body(result))

    @app.post("/sim/faults", dependencies=guarded)
    async def inject(body: FaultIn) -> dict[str, Any]:
        sim.inject(body.fault, body.operation, body.times)
        return {"injected": body.times}

    @app.post("/sim/decide", dependencies=guarded)
    async def decide() -> dict[str, Any]:
        return {"decided": sim.decide_pending()}

    @app.post("/sim/expire", dependencies=guarded)
    async def expire() -> dict[str, Any]:
        return {"expired": sim.expire_due()}

    @app.get("/sim/payments/{merchant_reference}", dependencies=guarded)
    async def payment(merchant_reference: str) -> dict[str, Any]:
        authorizations = sim.authorizations_of(merchant_reference)
        return {
            "authorizations": [
                {**asdict(a), "expires_at": a.expires_at.isoformat()} for a in authorizations
            ],
            "captured": sim.captured(merchant_reference),
            "refunded": sim.refunded(merchant_reference),
            "held": sim.held(merchant_reference),
        }

    return app


async def _expire_every_second(sim: SimulatedPsp, stop: asyncio.Event) -> None:
    while not stop.is_set():
        sim.expire_due()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
