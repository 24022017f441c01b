"""The loyalty HTTP API, its consumer of the orders topic and its jobs: ``build_app`` assembles
them."""

from __future__ import annotations

from fastapi import FastAPI

from omnistock.loyalty import SERVICE, consumers, service
from omnistock.loyalty.api import routes
from omnistock.loyalty.settings import LoyaltySettings
from omnistock.platform.clock import Clock, SystemClock
from omnistock.platform.http import create_app
from omnistock.platform.runtime import ServiceRuntime, periodic
from omnistock.platform.settings import Settings, get_settings


def build_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    *,
    schema: str | None = None,
    own: LoyaltySettings | None = None,
) -> FastAPI:
    """``own``: the loyalty settings; by default from OMNISTOCK_LOYALTY_* variables."""
    settings = settings or get_settings()
    own = own or LoyaltySettings()
    clock = clock or SystemClock()
    policy = own.policy()
    batch, interval = own.job_batch_size, own.job_interval_s
    # Every replica runs them all: they take their rows with SKIP LOCKED.
    jobs = [
        periodic(
            "earn-points", lambda conn: service.earn_due(conn, clock, policy, batch), interval
        ),
        periodic("expire-points", lambda conn: service.expire_due(conn, clock, batch), interval),
        periodic(
            "review-tiers", lambda conn: service.review_tiers(conn, clock, policy, batch), interval
        ),
    ]
    runtime = ServiceRuntime(
        SERVICE,
        settings,
        schema=schema,
        jobs=jobs,
        subscriptions=[consumers.subscription(clock, policy, own.orders_group)],
    )
    app = create_app(
        service=SERVICE,
        settings=settings,
        routers=[routes.router],
        lifespan=runtime.lifespan,
        readiness=runtime.readiness(),
    )
    app.state.runtime = runtime
    app.state.clock = clock
    app.state.policy = policy
    app.state.loyalty_settings = own
    return app
