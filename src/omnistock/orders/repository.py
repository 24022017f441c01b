"""The orders service's SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from omnistock.orders.domain import OrderStatus

ORDER_COLUMNS = """order_id::text AS order_id, customer_id, channel_id, platform, currency, total,
    reservation_id::text AS reservation_id, delivery, payment_method, payment_token,
    loyalty_points, status, version, cancel_reason, cancel_detail, step, step_started_at,
    step_attempts, next_attempt_at, lease_id::text AS lease_id, leased_until, last_error,
    payment_id, confirm_by, placed_at, updated_at"""

UNCONFIRMED = [OrderStatus.PLACED, OrderStatus.ALLOCATED, OrderStatus.AUTHORIZED]


async def insert_order(conn: asyncpg.Connection, order: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO orders (order_id, customer_id, channel_id, platform, currency, total,
               reservation_id, delivery, payment_method, payment_token, loyalty_points, status,
               version, step, step_started_at, next_attempt_at, confirm_by, placed_at,
               updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $14, $14, $15,
                   $14, $14)""",
        order["order_id"],
        order["customer_id"],
        order["channel_id"],
        order["platform"],
        order["currency"],
        order["total"],
        order["reservation_id"],
        order["delivery"],
        order["payment_method"],
        order["payment_token"],
        order["loyalty_points"],
        OrderStatus.PLACED.value,
        order["step"],
        order["placed_at"],
        order["confirm_by"],
    )
    await conn.executemany(
        """INSERT INTO order_lines (order_id, line_number, sku, quantity, unit_price)
           VALUES ($1, $2, $3, $4, $5)""",
        [
            (order["order_id"], number, line["sku"], line["quantity"], line["unit_price"])
            for number, line in enumerate(order["lines"])
        ],
    )


async def add_history(
    conn: asyncpg.Connection,
    order_id: str,
    version: int,
    status: str,
    previous: str | None,
    reason: str | None,
    step: str | None,
    at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO order_history
               (order_id, version, status, previous_status, reason, step, changed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        order_id,
        version,
        status,
        previous,
        reason,
        step,
        at,
    )


async def order(
    conn: asyncpg.Connection, order_id: str, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {ORDER_COLUMNS} FROM orders WHERE order_id = $1{lock}", uuid.UUID(order_id)
    )
    return row


async def lines(conn: asyncpg.Connection, order_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT sku, quantity, unit_price FROM order_lines WHERE order_id = $1
           ORDER BY line_number""",
        uuid.UUID(order_id),
    )
    return rows


async def orders_of(conn: asyncpg.Connection, customer_id: str, limit: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT order_id::text AS order_id, channel_id, status, version, currency, total,
                  cancel_reason, placed_at
           FROM orders WHERE customer_id = $1 ORDER BY placed_at DESC, order_id LIMIT $2""",
        customer_id,
        limit,
    )
    return rows


async def history(conn: asyncpg.Connection, order_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT version, status, previous_status, reason, step, changed_at
           FROM order_history WHERE order_id = $1 ORDER BY version""",
        uuid.UUID(order_id),
    )
    return rows


async def update_order(conn: asyncpg.Connection, order_id: str, **columns: Any) -> None:
    names = list(columns)
    assignments = ", ".join(f"{name} = ${number}" for number, name in enumerate(names, start=2))
    await conn.execute(
        f"UPDATE orders SET {assignments} WHERE order_id = $1",
        uuid.UUID(order_id),
        *columns.values(),
    )


async def claim_due(
    conn: asyncpg.Connection, now: datetime, leased_until: datetime, limit: int
) -> list[asyncpg.Record]:
    """Orders whose next step is due and not held by a worker, now held by this one. SKIP
    LOCKED: replicas share the work without waiting for each other."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""WITH due AS (
                SELECT order_id FROM orders
                WHERE step IS NOT NULL AND next_attempt_at <= $1
                  AND (leased_until IS NULL OR leased_until <= $1)
                ORDER BY next_attempt_at LIMIT $3
                FOR UPDATE SKIP LOCKED)
            UPDATE orders o SET lease_id = gen_random_uuid(), leased_until = $2
            FROM due WHERE o.order_id = due.order_id
            RETURNING {ORDER_COLUMNS.replace("order_id::text", "o.order_id::text")}""",
        now,
        leased_until,
        limit,
    )
    return rows


async def overdue(conn: asyncpg.Connection, now: datetime, limit: int) -> list[str]:
    """Unconfirmed orders past their deadline whose step is not under way."""
    rows = await conn.fetch(
        """SELECT order_id::text AS order_id FROM orders
           WHERE status = ANY($1::text[]) AND confirm_by <= $2
             AND (leased_until IS NULL OR leased_until <= $2)
           ORDER BY confirm_by LIMIT $3 FOR UPDATE SKIP LOCKED""",
        [s.value for s in UNCONFIRMED],
        now,
        limit,
    )
    return [row["order_id"] for row in rows]


async def stuck(conn: asyncpg.Connection, since: datetime, limit: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT order_id::text AS order_id, customer_id, status, step, step_started_at,
                  step_attempts, next_attempt_at, last_error
           FROM orders WHERE step IS NOT NULL AND step_started_at <= $1
           ORDER BY step_started_at LIMIT $2""",
        since,
        limit,
    )
    return rows


async def wake(
    conn: asyncpg.Connection, order_ids: list[uuid.UUID], step: str, now: datetime
) -> None:
    """Orders at ``step`` are due now (an event says their participant has an answer)."""
    await conn.execute(
        """UPDATE orders SET next_attempt_at = $3
           WHERE order_id = ANY($1::uuid[]) AND step = $2 AND next_attempt_at > $3""",
        order_ids,
        step,
        now,
    )
