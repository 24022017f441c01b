"""The customer-sync HTTP API, its consumer and its notification sender: ``build_app``."""

from __future__ import annotations

from fastapi import FastAPI

from omnistock.customer_sync import SERVICE, consumers, notifications
from omnistock.customer_sync.api import routes
from omnistock.customer_sync.settings import CustomerSyncSettings
from omnistock.platform.clock import Clock, SystemClock
from omnistock.platform.http import create_app
from omnistock.platform.runtime import ServiceRuntime
from omnistock.platform.settings import Settings, get_settings


def build_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    *,
    schema: str | None = None,
    own: CustomerSyncSettings | None = None,
    sender: notifications.Sender | None = None,
) -> FastAPI:
    """``sender``: where push notifications go; by default the log."""
    settings = settings or get_settings()
    own = own or CustomerSyncSettings()
    clock = clock or SystemClock()
    runtime = ServiceRuntime(
        SERVICE,
        settings,
        schema=schema,
        subscriptions=[consumers.subscription(clock, own.group, own.topics, own.trial_reminder())],
        jobs=[
            notifications.sender_job(
                clock,
                sender or notifications.LogSender(),
                own.sender_interval_s,
                own.sender_batch_size,
                own.retry_after(),
            )
        ],
        # It publishes nothing: no outbox to relay.
        relay=False,
    )
    app = create_app(
        service=SERVICE,
        settings=settings,
        routers=[routes.router],
        lifespan=runtime.lifespan,
        readiness=runtime.readiness(),
    )
    app.state.runtime = runtime
    return app
