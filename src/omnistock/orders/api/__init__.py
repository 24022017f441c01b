"""The orders HTTP API and its saga worker: ``build_app`` assembles them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from omnistock.orders import SERVICE, consumers, lifecycle, service
from omnistock.orders.api import fulfilment, routes
from omnistock.orders.participants import Participants
from omnistock.orders.settings import OrdersSettings
from omnistock.orders.worker import SagaWorker
from omnistock.platform.clock import Clock, SystemClock
from omnistock.platform.http import create_app
from omnistock.platform.ratelimit import ConcurrencyLimit
from omnistock.platform.runtime import ServiceRuntime, periodic
from omnistock.platform.settings import Settings, get_settings


def build_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    *,
    schema: str | None = None,
    own: OrdersSettings | None = None,
) -> FastAPI:
    """``own``: the orders settings; by default from OMNISTOCK_ORDERS_* variables."""
    settings = settings or get_settings()
    own = own or OrdersSettings()
    clock = clock or SystemClock()
    participants = Participants(settings, own)
    placing = ConcurrencyLimit(own.placements_in_flight)
    worker = SagaWorker(participants, clock, own, intake=placing)
    jobs = [
        # Every replica runs both: they take orders with SKIP LOCKED.
        worker.job(),
        periodic(
            "overdue-orders",
            lambda conn: service.cancel_overdue(conn, clock),
            own.worker_interval_s,
        ),
        periodic(
            "ended-trials", lambda conn: lifecycle.close_trials(conn, clock), own.worker_interval_s
        ),
    ]
    runtime = ServiceRuntime(
        SERVICE,
        settings,
        schema=schema,
        jobs=jobs,
        subscriptions=[
            consumers.subscription(clock, own.payments_group),
            consumers.fulfilment_subscription(clock, own.fulfilment_group),
        ],
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with runtime.lifespan():
            yield
        await participants.close()

    app = create_app(
        service=SERVICE,
        settings=settings,
        routers=[routes.router, fulfilment.router],
        lifespan=lifespan,
        readiness=runtime.readiness(),
    )
    app.state.runtime = runtime
    app.state.clock = clock
    app.state.orders_settings = own
    app.state.participants = participants
    app.state.worker = worker
    app.state.placing = placing
    return app
