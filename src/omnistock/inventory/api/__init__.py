"""The inventory HTTP API: ``build_app`` assembles it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from omnistock.inventory import SERVICE, service
from omnistock.inventory.api import bulk, reservations, stock
from omnistock.inventory.api.common import router
from omnistock.inventory.api.schemas import InventorySettings
from omnistock.inventory.reserving import ReservationBatcher
from omnistock.platform.clock import Clock, SystemClock
from omnistock.platform.http import create_app
from omnistock.platform.ratelimit import RateLimiter
from omnistock.platform.runtime import BackgroundJob, ServiceRuntime, periodic
from omnistock.platform.settings import Settings, get_settings

ROUTE_MODULES = (stock, reservations)  # importing them adds their routes to ``router``


def sweeper(interval_s: float, clock: Clock) -> BackgroundJob:
    """Expires reservations past their TTL; several replicas sweeping at once are safe."""
    return periodic("sweeper", lambda conn: service.expire_due(conn, clock), interval_s)


def build_app(
    settings: Settings | None = None, clock: Clock | None = None, *, schema: str | None = None
) -> FastAPI:
    settings = settings or get_settings()
    own = InventorySettings()
    clock = clock or SystemClock()
    runtime = ServiceRuntime(
        SERVICE, settings, schema=schema, jobs=[sweeper(own.sweep_interval_s, clock)]
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.lifespan():
            batcher = ReservationBatcher(
                runtime.pool, clock, own.reservation_batch_workers, own.reservation_batch_max
            )
            app.state.batcher = batcher
            batcher.start()
            try:
                yield
            finally:
                await batcher.stop()

    app = create_app(
        service=SERVICE,
        settings=settings,
        routers=[router, bulk.router],
        lifespan=lifespan,
        readiness=runtime.readiness(),
    )
    app.state.runtime = runtime
    app.state.clock = clock
    app.state.rate_limiter = RateLimiter(own.reservations_per_client_per_s, own.reservation_burst)
    return app
