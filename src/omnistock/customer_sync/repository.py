"""The customer-sync service's SQL."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from omnistock.customer_sync.projection import Change, Notice, fold

NOTICE_NAMESPACE = uuid.UUID("7f1d2c3b-5a4e-4d6f-9b8a-0c1e2f3a4b5c")


async def apply(conn: asyncpg.Connection, changes: Sequence[Change]) -> None:
    """Merge the changes into their entries, under the entries' row locks (a batch may touch an
    entry several times; locks are taken in key order so that replicas never deadlock)."""
    keys = sorted({(c.kind, c.entity_id) for c in changes})
    rows = await conn.fetch(
        """SELECT kind, entity_id, customer_id, order_id, version, fields FROM entries
           WHERE (kind, entity_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))
           ORDER BY kind, entity_id FOR UPDATE""",
        [k for k, _ in keys],
        [e for _, e in keys],
    )
    current: dict[tuple[str, str], dict[str, Any]] = {
        (r["kind"], r["entity_id"]): dict(r) for r in rows
    }
    for change in changes:
        key = (change.kind, change.entity_id)
        current[key] = fold(current.get(key), change)
    await conn.executemany(
        """INSERT INTO entries (kind, entity_id, customer_id, order_id, version, fields)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (kind, entity_id) DO UPDATE
           SET customer_id = EXCLUDED.customer_id, order_id = EXCLUDED.order_id,
               version = EXCLUDED.version, fields = EXCLUDED.fields""",
        [
            (e["kind"], e["entity_id"], e["customer_id"], e["order_id"], e["version"], e["fields"])
            for key in keys
            for e in [current[key]]
        ],
    )


async def record_notices(
    conn: asyncpg.Connection, notices: Sequence[Notice], now: datetime
) -> None:
    """Each notice once: its id is derived from (kind, key), and a repeat is dropped."""
    await conn.executemany(
        """INSERT INTO notifications
               (notification_id, kind, key, order_id, customer_id, details, due_at, recorded_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (kind, key) DO NOTHING""",
        [
            (
                uuid.uuid5(NOTICE_NAMESPACE, f"{n.kind}:{n.key}"),
                n.kind,
                n.key,
                n.order_id,
                n.customer_id,
                dict(n.details),
                n.due_at,
                now,
            )
            for n in notices
        ],
    )


async def timeline(conn: asyncpg.Connection, customer_id: str) -> list[asyncpg.Record]:
    """The customer's entries: those that name the customer and those of the customer's orders
    that do not (most payment events)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """WITH own AS (SELECT entity_id FROM entries WHERE kind = 'order' AND customer_id = $1)
           SELECT kind, entity_id, order_id, version, fields FROM entries
           WHERE customer_id = $1 OR order_id IN (SELECT entity_id FROM own)
           ORDER BY kind, entity_id""",
        customer_id,
    )
    return rows


async def notifications_of(
    conn: asyncpg.Connection, customer_id: str, limit: int
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT n.notification_id::text AS notification_id, n.kind, n.order_id, n.details,
                  n.due_at, n.sent_at
           FROM notifications n
           LEFT JOIN entries o ON o.kind = 'order' AND o.entity_id = n.order_id
           WHERE coalesce(n.customer_id, o.customer_id) = $1
           ORDER BY n.due_at DESC, n.notification_id LIMIT $2""",
        customer_id,
        limit,
    )
    return rows


async def claim_due(
    conn: asyncpg.Connection, now: datetime, retry_at: datetime, limit: int
) -> list[asyncpg.Record]:
    """Unsent notifications that are due and whose customer is known (a refund may be seen
    before its order), now due again at ``retry_at`` in case their delivery is lost."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """WITH due AS (
               SELECT n.notification_id, coalesce(n.customer_id, o.customer_id) AS customer_id
               FROM notifications n
               LEFT JOIN entries o ON o.kind = 'order' AND o.entity_id = n.order_id
               WHERE n.sent_at IS NULL AND n.due_at <= $1
                 AND coalesce(n.customer_id, o.customer_id) IS NOT NULL
               ORDER BY n.due_at LIMIT $3 FOR UPDATE OF n SKIP LOCKED)
           UPDATE notifications n SET due_at = $2, customer_id = due.customer_id
           FROM due WHERE n.notification_id = due.notification_id
           RETURNING n.notification_id::text AS notification_id, n.kind, n.order_id, n.details,
                     n.customer_id""",
        now,
        retry_at,
        limit,
    )
    return rows


async def mark_sent(conn: asyncpg.Connection, notification_id: str, at: datetime) -> None:
    await conn.execute(
        "UPDATE notifications SET sent_at = $2, attempts = attempts + 1 WHERE notification_id = $1",
        uuid.UUID(notification_id),
        at,
    )


async def mark_failed(conn: asyncpg.Connection, notification_id: str, error: str) -> None:
    await conn.execute(
        """UPDATE notifications SET attempts = attempts + 1, last_error = $2
           WHERE notification_id = $1""",
        uuid.UUID(notification_id),
        error[:500],
    )


async def digest(conn: asyncpg.Connection) -> tuple[str, int]:
    """A fingerprint of the whole view and its number of entries: equal digests, equal views."""
    hashed = hashlib.sha256()
    count = 0
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        async for row in conn.cursor(
            """SELECT kind, entity_id, customer_id, order_id, version, fields FROM entries
               ORDER BY kind, entity_id"""
        ):
            hashed.update(orjson.dumps(dict(row), option=orjson.OPT_SORT_KEYS))
            count += 1
    return hashed.hexdigest(), count


async def forget_view(conn: asyncpg.Connection) -> None:
    """Drop the view (not the notifications: those already recorded stay recorded once)."""
    await conn.execute("TRUNCATE entries")
