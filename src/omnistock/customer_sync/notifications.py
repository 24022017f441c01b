"""Delivering the recorded notifications: a periodic job hands each due one to the sender and
marks it sent. The record is made once (at most one row per kind and key); delivery is at least
once, so a sender passes ``notification_id`` on as its idempotency key where the push provider
takes one."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import asyncpg
import structlog

from omnistock.customer_sync import repository
from omnistock.platform.clock import Clock
from omnistock.platform.runtime import BackgroundJob, ServiceRuntime

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Notification:
    notification_id: str
    customer_id: str
    kind: str
    order_id: str
    details: dict[str, Any]


class Sender(Protocol):
    async def send(self, notification: Notification) -> None:
        """Deliver, or raise to have it tried again later."""


class LogSender:
    """Writes each notification to the log: development, and a stand-in for a push provider."""

    async def send(self, notification: Notification) -> None:
        log.info(
            "push notification",
            notification_id=notification.notification_id,
            customer_id=notification.customer_id,
            kind=notification.kind,
            order_id=notification.order_id,
            **notification.details,
        )


async def send_due(
    pool: asyncpg.Pool, clock: Clock, sender: Sender, limit: int, retry_after: timedelta
) -> int:
    """Claim the due notifications (each is due again ``retry_after`` later, should this
    replica die mid-way), deliver them with no transaction open, mark them sent."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await repository.claim_due(conn, clock.now(), clock.now() + retry_after, limit)
    for row in rows:
        notification = Notification(
            row["notification_id"], row["customer_id"], row["kind"], row["order_id"], row["details"]
        )
        try:
            await sender.send(notification)
        except Exception as exc:
            log.warning("push notification failed", notification_id=row["notification_id"])
            async with pool.acquire() as conn:
                await repository.mark_failed(
                    conn, row["notification_id"], f"{type(exc).__name__}: {exc}"
                )
            continue
        async with pool.acquire() as conn:
            await repository.mark_sent(conn, row["notification_id"], clock.now())
    return len(rows)


def sender_job(
    clock: Clock, sender: Sender, interval_s: float, limit: int, retry_after: timedelta
) -> BackgroundJob:
    async def notification_sender(runtime: ServiceRuntime, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                sent = await send_due(runtime.pool, clock, sender, limit, retry_after)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("notification sender waits for the database", error=str(exc))
                sent = 0
            if sent == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)

    return notification_sender
