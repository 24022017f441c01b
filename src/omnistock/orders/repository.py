"""The orders service's SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from omnistock.orders.domain import OrderStatus
from omnistock.platform.outbox import OutboxRows, insert_rows, written

ORDER_COLUMNS = """order_id::text AS order_id, customer_id, channel_id, platform, currency, total,
    reservation_id::text AS reservation_id, delivery, payment_method, payment_token,
    loyalty_points, status, version, cancel_reason, cancel_detail, step, step_started_at,
    step_attempts, next_attempt_at, lease_id::text AS lease_id, leased_until, last_error,
    payment_id, confirm_by, placed_at, updated_at, pickup_code, delivered_at, trial_ends_at,
    completed_at, points"""

UNCONFIRMED = [OrderStatus.PLACED, OrderStatus.ALLOCATED, OrderStatus.AUTHORIZED]


async def insert_order(conn: asyncpg.Connection, order: dict[str, Any], event: OutboxRows) -> None:
    """The order, its lines, its first history row and its event, in one statement (one round
    trip)."""
    lines = order["lines"]
    await conn.execute(
        f"""WITH placed AS (
               INSERT INTO orders (order_id, customer_id, channel_id, platform, currency, total,
                   reservation_id, delivery, payment_method, payment_token, loyalty_points,
                   status, version, step, step_started_at, next_attempt_at, confirm_by,
                   placed_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $14, $14,
                       $15, $14, $14)
               RETURNING order_id),
           lines AS (
               INSERT INTO order_lines (order_id, line_number, sku, quantity, unit_price)
               SELECT $1, number - 1, sku, quantity, unit_price
               FROM unnest($16::text[], $17::integer[], $18::bigint[])
                    WITH ORDINALITY AS line(sku, quantity, unit_price, number)),
           history AS (
               INSERT INTO order_history (order_id, version, status, changed_at)
               SELECT order_id, 1, $12, $14 FROM placed)
           {insert_rows(19)}""",
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
        [line["sku"] for line in lines],
        [line["quantity"] for line in lines],
        [line["unit_price"] for line in lines],
        *event,
    )
    await written(conn)


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
        """SELECT sku, quantity, unit_price, decision FROM order_lines WHERE order_id = $1
           ORDER BY line_number""",
        uuid.UUID(order_id),
    )
    return rows


async def orders_of(
    conn: asyncpg.Connection,
    customer_id: str,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None = None,
) -> list[asyncpg.Record]:
    """A customer's orders, newest first; with ``before`` (placed at, order id), those that
    come after that one in this order. Keyed, not offset: a page reads only its own rows, and
    orders placed meanwhile neither repeat nor skip one."""
    placed_at, order_id = before if before is not None else (None, None)
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT order_id::text AS order_id, channel_id, status, version, currency, total,
                  cancel_reason, placed_at
           FROM orders
           WHERE customer_id = $1
             AND ($3::timestamptz IS NULL OR (placed_at, order_id) < ($3, $4::uuid))
           ORDER BY placed_at DESC, order_id DESC LIMIT $2""",
        customer_id,
        limit,
        placed_at,
        order_id,
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


async def update_order_with_history(
    conn: asyncpg.Connection,
    order_id: str,
    history: tuple[int, str, str | None, str | None, str | None, datetime],
    event: OutboxRows,
    **columns: Any,
) -> None:
    """``update_order``, ``add_history`` (version, status, previous status, reason, step, at)
    and the change's event in one statement: one round trip to the database instead of three."""
    names = list(columns)
    assignments = ", ".join(f"{name} = ${number}" for number, name in enumerate(names, start=13))
    await conn.execute(
        f"""WITH changed AS (
                UPDATE orders SET {assignments} WHERE order_id = $1 RETURNING order_id),
            history AS (
                INSERT INTO order_history
                    (order_id, version, status, previous_status, reason, step, changed_at)
                SELECT order_id, $2, $3, $4, $5, $6, $7 FROM changed)
            {insert_rows(8)}""",
        uuid.UUID(order_id),
        *history,
        *event,
        *columns.values(),
    )
    await written(conn)


async def claim_due(
    conn: asyncpg.Connection, now: datetime, leased_until: datetime, limit: int
) -> list[asyncpg.Record]:
    """Orders whose next step is due and not held by a worker, now held by this one, longest
    due first. A step that follows another at once is due since its order was placed
    (``service``), so behind a backlog an order that has made a step waits behind the orders
    placed after it no longer: orders are confirmed about in the order they came. Read in the
    order of the due index, a claim reads about as many rows as it takes, where sorting every
    due order by placement read the whole backlog each time (3.4 ms a claim behind a rush's
    backlog). SKIP LOCKED: replicas share the work without waiting for each other."""
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


# -- after confirmation --


async def save_allocations(
    conn: asyncpg.Connection, order_id: str, allocations: list[dict[str, Any]]
) -> None:
    """What inventory allocated; a row a shipment event created first keeps its shipment."""
    await conn.execute(
        """INSERT INTO order_allocations (allocation_id, order_id, sku, location_id, quantity)
           SELECT a, $1, s, l, q
           FROM unnest($2::text[], $3::text[], $4::text[], $5::int[]) AS x(a, s, l, q)
           ON CONFLICT (allocation_id) DO UPDATE
           SET sku = EXCLUDED.sku, location_id = EXCLUDED.location_id,
               quantity = EXCLUDED.quantity""",
        uuid.UUID(order_id),
        [a["allocation_id"] for a in allocations],
        [a["sku"] for a in allocations],
        [a["location_id"] for a in allocations],
        [a["quantity"] for a in allocations],
    )


async def ship_allocation(
    conn: asyncpg.Connection, order_id: str, allocation_id: str, shipment_id: str, at: datetime
) -> bool:
    """Whether this allocation was not known as shipped before (a repeat changes nothing)."""
    shipped: bool = await conn.fetchval(
        """INSERT INTO order_allocations (allocation_id, order_id, shipment_id, shipped_at)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (allocation_id) DO UPDATE
           SET shipment_id = EXCLUDED.shipment_id, shipped_at = EXCLUDED.shipped_at
           WHERE order_allocations.shipment_id IS NULL
           RETURNING true""",
        allocation_id,
        uuid.UUID(order_id),
        shipment_id,
        at,
    )
    if shipped:
        await conn.execute(
            """INSERT INTO order_shipments (order_id, shipment_id, status, shipped_at)
               VALUES ($1, $2, 'shipped', $3) ON CONFLICT DO NOTHING""",
            uuid.UUID(order_id),
            shipment_id,
            at,
        )
    return bool(shipped)


async def allocations(conn: asyncpg.Connection, order_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT allocation_id, sku, location_id, quantity, shipment_id
           FROM order_allocations WHERE order_id = $1 ORDER BY sku, allocation_id""",
        uuid.UUID(order_id),
    )
    return rows


async def shipments(conn: asyncpg.Connection, order_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT shipment_id, status, shipped_at, delivered_at FROM order_shipments
           WHERE order_id = $1 ORDER BY shipped_at, shipment_id""",
        uuid.UUID(order_id),
    )
    return rows


async def deliver_shipment(
    conn: asyncpg.Connection, order_id: str, shipment_id: str, at: datetime
) -> str | None:
    """The shipment's status before (None: no such shipment); it is delivered now."""
    before: str | None = await conn.fetchval(
        """UPDATE order_shipments s SET status = 'delivered',
               delivered_at = COALESCE(s.delivered_at, $3)
           FROM order_shipments old
           WHERE s.order_id = $1 AND s.shipment_id = $2
             AND old.order_id = s.order_id AND old.shipment_id = s.shipment_id
           RETURNING old.status""",
        uuid.UUID(order_id),
        shipment_id,
        at,
    )
    return before


async def decide_lines(
    conn: asyncpg.Connection, order_id: str, decisions: dict[str, str], at: datetime
) -> None:
    await conn.execute(
        """UPDATE order_lines l SET decision = d.decision, decided_at = $3
           FROM unnest($2::text[], $4::text[]) AS d(sku, decision)
           WHERE l.order_id = $1 AND l.sku = d.sku AND l.decision IS NULL""",
        uuid.UUID(order_id),
        list(decisions),
        at,
        list(decisions.values()),
    )


async def keep_undecided(conn: asyncpg.Connection, order_id: str, at: datetime) -> None:
    await conn.execute(
        """UPDATE order_lines SET decision = 'keep', decided_at = $2
           WHERE order_id = $1 AND decision IS NULL""",
        uuid.UUID(order_id),
        at,
    )


async def add_return(
    conn: asyncpg.Connection,
    return_id: str,
    order_id: str,
    kind: str,
    refund_amount: int,
    reason: str | None,
    lines: list[tuple[str, int, int]],
    at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO order_returns
               (return_id, order_id, kind, status, refund_amount, reason, requested_at)
           VALUES ($1, $2, $3, 'requested', $4, $5, $6)""",
        uuid.UUID(return_id),
        uuid.UUID(order_id),
        kind,
        refund_amount,
        reason,
        at,
    )
    await conn.executemany(
        """INSERT INTO order_return_lines (return_id, sku, quantity, unit_price)
           VALUES ($1, $2, $3, $4)""",
        [(uuid.UUID(return_id), sku, quantity, price) for sku, quantity, price in lines],
    )


RETURN_COLUMNS = """return_id::text AS return_id, kind, status, refund_amount, reason, location_id,
    sellable, requested_at, received_at, settled_at"""


async def returns(
    conn: asyncpg.Connection, order_id: str, status: str | None = None
) -> list[dict[str, Any]]:
    """The order's returns (only those in ``status`` if given), each with its lines."""
    rows = await conn.fetch(
        f"""SELECT {RETURN_COLUMNS},
                   (SELECT coalesce(jsonb_agg(jsonb_build_object('sku', l.sku,
                        'quantity', l.quantity, 'unit_price', l.unit_price) ORDER BY l.sku),
                        '[]'::jsonb)
                    FROM order_return_lines l WHERE l.return_id = r.return_id) AS lines
            FROM order_returns r WHERE order_id = $1 AND ($2::text IS NULL OR status = $2)
            ORDER BY requested_at, return_id""",
        uuid.UUID(order_id),
        status,
    )
    return [dict(row) for row in rows]


async def returned_quantities(conn: asyncpg.Connection, order_id: str) -> dict[str, int]:
    """Units of each SKU already on a return of the order, of any kind."""
    rows = await conn.fetch(
        """SELECT l.sku, sum(l.quantity)::int AS quantity
           FROM order_returns r JOIN order_return_lines l USING (return_id)
           WHERE r.order_id = $1 GROUP BY l.sku""",
        uuid.UUID(order_id),
    )
    return {row["sku"]: row["quantity"] for row in rows}


async def receive_return(
    conn: asyncpg.Connection,
    order_id: str,
    return_id: str,
    location_id: str,
    sellable: bool,
    at: datetime,
) -> asyncpg.Record | None:
    """The return as it was before; it is received now if it was only requested."""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""SELECT {RETURN_COLUMNS} FROM order_returns
            WHERE return_id = $1 AND order_id = $2 FOR UPDATE""",
        uuid.UUID(return_id),
        uuid.UUID(order_id),
    )
    if row is not None and row["status"] == "requested":
        await conn.execute(
            """UPDATE order_returns SET status = 'received', location_id = $2, sellable = $3,
                   received_at = $4 WHERE return_id = $1""",
            uuid.UUID(return_id),
            location_id,
            sellable,
            at,
        )
    return row


async def settle_returns(
    conn: asyncpg.Connection, return_ids: list[str], at: datetime
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"""UPDATE order_returns r SET status = 'settled', settled_at = $2
            WHERE return_id = ANY($1::uuid[]) AND status = 'received'
            RETURNING {RETURN_COLUMNS},
                (SELECT jsonb_agg(jsonb_build_object('sku', l.sku, 'quantity', l.quantity))
                 FROM order_return_lines l WHERE l.return_id = r.return_id) AS lines""",
        [uuid.UUID(x) for x in return_ids],
        at,
    )
    return [dict(row) for row in rows]


async def has_received_returns(conn: asyncpg.Connection, order_id: str) -> bool:
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM order_returns WHERE order_id = $1 AND status = 'received')",
        uuid.UUID(order_id),
    )
    return found


async def trials_ended(conn: asyncpg.Connection, now: datetime, limit: int) -> list[str]:
    """Orders in trial past the window's end with nothing under way."""
    rows = await conn.fetch(
        """SELECT order_id::text AS order_id FROM orders
           WHERE status = 'in_trial' AND trial_ends_at <= $1 AND step IS NULL
           ORDER BY trial_ends_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )
    return [row["order_id"] for row in rows]
