"""The pricing HTTP API and its scheduler: ``build_app`` assembles them."""

from __future__ import annotations

from fastapi import FastAPI

from omnistock.platform.clock import Clock, SystemClock
from omnistock.platform.http import create_app
from omnistock.platform.runtime import ServiceRuntime, periodic
from omnistock.platform.settings import Settings, get_settings
from omnistock.pricing import SERVICE, service
from omnistock.pricing.api import imports, routes
from omnistock.pricing.api.schemas import PricingSettings


def build_app(
    settings: Settings | None = None, clock: Clock | None = None, *, schema: str | None = None
) -> FastAPI:
    settings = settings or get_settings()
    own = PricingSettings()
    clock = clock or SystemClock()
    # Publishes each price at the moment it changes; every replica runs it, safely.
    scheduler = periodic(
        "scheduler", lambda conn: service.publish_due(conn, clock), own.scheduler_interval_s
    )
    runtime = ServiceRuntime(SERVICE, settings, schema=schema, jobs=[scheduler])
    app = create_app(
        service=SERVICE,
        settings=settings,
        routers=[routes.router, imports.router],
        lifespan=runtime.lifespan,
        readiness=runtime.readiness(),
    )
    app.state.runtime = runtime
    app.state.clock = clock
    return app
