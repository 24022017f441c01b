"""The payments HTTP API, its scheduler and recovery job: ``build_app`` assembles them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Scope

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


WEBHOOK_PATH = "/v1/psp/webhooks"


def _deliver_to_self(simulator: SimulatedPsp, app: Callable[[], FastAPI]) -> BackgroundJob:
    """The in-service simulator's webhooks, posted to the service's own webhook endpoint."""

    async def deliver(_runtime: ServiceRuntime, stop: asyncio.Event) -> None:
        async def post(body: bytes, headers: dict[str, str]) -> int:
            return await asgi_post(app(), WEBHOOK_PATH, body, headers)

        await simulator.deliver_webhooks(post, stop)

    return deliver


async def asgi_post(app: ASGIApp, path: str, body: bytes, headers: dict[str, str]) -> int:
    """POST ``body`` to ``app`` in this process, as a server would hand it over, through all its
    middleware (signature checks included); the status it answered. What a real PSP pays for
    sending its webhooks is no cost of ours: an HTTP client here (one in-process transport
    cost as much as the endpoint's own work) made this service look dearer than it runs."""
    raw = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()
    ]
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [*raw, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 0),
        "server": ("127.0.0.1", 0),
    }
    answered = asyncio.Event()
    status = 0
    unread = True

    async def receive() -> Message:
        nonlocal unread
        if unread:
            unread = False
            return {"type": "http.request", "body": body, "more_body": False}
        await answered.wait()  # a disconnect only once the answer is complete, as a client
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            answered.set()

    await app(scope, receive, send)
    return status


def refusal_to_serve(host: str) -> str | None:
    """Checked by ``omnistock serve`` before it listens on ``host``."""
    return PaymentsSettings().refusal_to_serve(host)
