"""The inventory HTTP API: ``build_app`` assembles it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import structlog
from fastapi import FastAPI

from omnistock.inventory import SERVICE, service
from omnistock.inventory.api import bulk, reservations, stock
from omnistock.inventory.api.common import router
from omnistock.inventory.api.schemas import InventorySettings
from omnistock.inventory.reserving import ReservationBatcher
from omnistock.platform.clock import Clock, SystemClock
from omnistock.platform.http import create_app
from omnistock.platform.ratelimit import RateLimiter
from omnistock.platform.runtime import ServiceRuntime
from omnistock.platform.settings import Settings, get_settings

log = structlog.get_logger(__name__)

ROUTE_MODULES = (stock, reservations)  # importing them adds their routes to ``router``


def sweeper(
    interval_s: float, clock: Clock
) -> Callable[[ServiceRuntime, asyncio.Event], Awaitable[None]]:
    """Expires reservations past their TTL. Its state is the reservations table, so a restart
    picks up exactly where it left off; several replicas sweeping at once are safe."""

    async def sweep(runtime: ServiceRuntime, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with runtime.pool.acquire() as conn, conn.transaction():
                    expired = await service.expire_due(conn, clock)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # A database blip or a lost lock race: the due reservations are still due.
                log.warning("sweep failed, trying again", error=str(exc))
                expired = 0
            if expired == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)

    return sweep


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
