"""Every change of an order goes through here: a status move (checked against the transition
table) or a change within a status (a shipment, a return). Each is one version: the order row,
its history row and its event, in the caller's transaction."""

from __future__ import annotations

from typing import Any

import asyncpg

from omnistock.contracts import orders as contract
from omnistock.orders import SERVICE, domain, repository, saga
from omnistock.orders.domain import CancelReason, OrderStatus
from omnistock.platform.clock import Clock
from omnistock.platform.outbox import OutboxMessage, outbox_rows


def message(payload: Any, order_id: str, version: int) -> OutboxMessage:
    return OutboxMessage(payload, aggregate_id=order_id, aggregate_version=version)


async def change_status(
    conn: asyncpg.Connection,
    clock: Clock,
    row: asyncpg.Record | dict[str, Any],
    target: OrderStatus,
    *,
    reason: str | None = None,
    during: str | None = None,
    **columns: Any,
) -> dict[str, Any]:
    """Move a locked order to ``target`` (its history row and event included); returns the
    row as it is now, so that several moves can follow in one transaction."""
    current = OrderStatus(row["status"])
    domain.transition(current, target)
    now = clock.now()
    version = row["version"] + 1
    order_id = row["order_id"]
    event = contract.OrderStatusChanged(
        order_id=order_id,
        customer_id=row["customer_id"],
        version=version,
        status=target.value,
        previous_status=current.value,
        reason=reason,
        step=during,
    )
    await repository.update_order_with_history(
        conn,
        order_id,
        (version, target.value, current.value, reason, during, now),
        outbox_rows(SERVICE, [message(event, order_id, version)], clock),
        status=target.value,
        version=version,
        updated_at=now,
        **columns,
    )
    return {**dict(row), **columns, "status": target.value, "version": version}


async def record_change(
    conn: asyncpg.Connection,
    clock: Clock,
    row: asyncpg.Record | dict[str, Any],
    reason: str,
    event: Any,
) -> dict[str, Any]:
    """A change within the order's status: ``event`` (built for the new version, which is
    ``row["version"] + 1``) is published and kept in the history as ``reason``."""
    now = clock.now()
    version = row["version"] + 1
    order_id = row["order_id"]
    status = row["status"]
    await repository.update_order_with_history(
        conn,
        order_id,
        (version, status, status, reason, None, now),
        outbox_rows(SERVICE, [message(event, order_id, version)], clock),
        version=version,
        updated_at=now,
    )
    return {**dict(row), "version": version}


async def start_compensation(
    conn: asyncpg.Connection,
    clock: Clock,
    row: asyncpg.Record | dict[str, Any],
    reason: CancelReason,
    detail: str | None,
) -> None:
    """The order becomes ``cancelling``: the worker undoes its steps, then cancels it."""
    now = clock.now()
    await change_status(
        conn,
        clock,
        row,
        OrderStatus.CANCELLING,
        reason=reason.value,
        during=row["step"],
        cancel_reason=reason.value,
        cancel_detail=detail,
        step=saga.compensation_from(row["step"]),
        step_started_at=now,
        step_attempts=0,
        next_attempt_at=now,
        last_error=None,
    )
