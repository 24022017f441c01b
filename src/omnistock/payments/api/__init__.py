"""The payments HTTP API, its scheduler and recovery job: ``build_app`` assembles them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
from fastapi import FastAPI

from omnistock.payments import SERVICE, repository, service
from omnistock.payments.api import routes, webhooks
from omnistock.payments.api.schemas import PaymentsSettings
from omnistock.payments.driver import Driver
from omnistock.payments.psp import HttpPsp, PaymentServiceProvider
from omnistock.payments.simulator import SimulatedPsp, SimulatorSettings
from omnistock.platform.clock import Clock, SystemClock
from omnistock.platform.http import create_app
from omnistock.platform.runtime import BackgroundJob, ServiceRuntime, periodic
from omnistock.platform.settings import Settings, get_settings


def build_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    *,
    schema: str | None = None,
    psp: PaymentServiceProvider | None = None,
) -> FastAPI:
    """``psp``: the PSP to talk to; by default the simulator's HTTP API at
    OMNISTOCK_PAYMENTS_PSP_URL, or, unset, a simulator inside the service (development)."""
    settings = settings or get_settings()
    own = PaymentsSettings()
    clock = clock or SystemClock()
    timing = own.timing()
    simulator: SimulatedPsp | None = None
    if psp is None and own.psp_url:
        psp = HttpPsp(own.psp_url, own.psp_api_key, own.psp_timeout_s)
    elif psp is None:
        psp = simulator = SimulatedPsp(clock, SimulatorSettings(webhook_secret=own.webhook_secret))
    driver = Driver(psp, clock, timing)
    jobs = [
        # Every replica runs both, safely: they take payments and operations with SKIP LOCKED.
        periodic(
            "scheduler",
            lambda conn: service.run_due_steps(conn, clock, timing),
            own.scheduler_interval_s,
        ),
        driver.recovery_job(own.recovery_interval_s),
        periodic(
            "webhook-pruning",
            lambda conn: repository.forget_webhooks(
                conn, clock.now() - timedelta(seconds=own.webhook_retention_s)
            ),
            3600,
        ),
    ]
    app: FastAPI
    if simulator is not None:
        jobs.append(_deliver_to_self(simulator, lambda: app))
    runtime = ServiceRuntime(SERVICE, settings, schema=schema, jobs=jobs)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with runtime.lifespan():
            yield
        if isinstance(psp, HttpPsp):
            await psp.close()

    app = create_app(
        service=SERVICE,
        settings=settings,
        routers=[routes.router, webhooks.router],
        lifespan=lifespan,
        readiness=runtime.readiness(),
    )
    app.state.runtime = runtime
    app.state.clock = clock
    app.state.timing = timing
    app.state.driver = driver
    app.state.webhook_secret = own.webhook_secret
    app.state.webhook_tolerance_s = own.webhook_tolerance_s
    return app


def _deliver_to_self(simulator: SimulatedPsp, app: Callable[[], FastAPI]) -> BackgroundJob:
    """The in-service simulator's webhooks, posted to the service's own webhook endpoint."""

    async def deliver(_runtime: ServiceRuntime, stop: asyncio.Event) -> None:
        transport = httpx.ASGITransport(app=app())
        async with httpx.AsyncClient(transport=transport, base_url="http://payments") as client:

            async def post(body: bytes, headers: dict[str, str]) -> int:
                response = await client.post("/v1/psp/webhooks", content=body, headers=headers)
                return response.status_code

            await simulator.deliver_webhooks(post, stop)

    return deliver


def refusal_to_serve(host: str) -> str | None:
    """Checked by ``omnistock serve`` before it listens on ``host``."""
    return PaymentsSettings().refusal_to_serve(host)
