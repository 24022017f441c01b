"""The collection-points HTTP API and its expiry job: ``build_app`` assembles them."""

from __future__ import annotations

from fastapi import FastAPI

from omnistock.collection_points import SERVICE, service
from omnistock.collection_points.api import bookings, points
from omnistock.collection_points.settings import CollectionPointsSettings
from omnistock.platform.clock import Clock, SystemClock
from omnistock.platform.http import create_app
from omnistock.platform.runtime import ServiceRuntime, periodic
from omnistock.platform.settings import Settings, get_settings


def build_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    *,
    schema: str | None = None,
    own: CollectionPointsSettings | None = None,
) -> FastAPI:
    """``own``: the service's settings; by default from OMNISTOCK_COLLECTION_POINTS_* variables."""
    settings = settings or get_settings()
    own = own or CollectionPointsSettings()
    clock = clock or SystemClock()
    # Every replica runs it, safely: each parcel is expired under its point's row lock, once.
    expiry = periodic(
        "parcel-expiry",
        lambda conn: service.expire_due(conn, clock, own.expiry_batch_size),
        own.expiry_interval_s,
    )
    runtime = ServiceRuntime(SERVICE, settings, schema=schema, jobs=[expiry])
    app = create_app(
        service=SERVICE,
        settings=settings,
        routers=[points.router, bookings.router],
        lifespan=runtime.lifespan,
        readiness=runtime.readiness(),
    )
    app.state.runtime = runtime
    app.state.clock = clock
    app.state.collection_points_settings = own
    return app
