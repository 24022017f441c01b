"""Demo use cases: each is one transaction that changes state and writes its events."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from omnistock.contracts.demo import PingSent
from omnistock.platform import events
from omnistock.platform.clock import Clock
from omnistock.platform.outbox import OutboxMessage, add_to_outbox

SOURCE = "/omnistock/demo"


async def send_pings(
    conn: asyncpg.Connection,
    stream: str,
    messages: Sequence[str],
    clock: Clock,
    topic: str | None = None,
) -> list[dict[str, Any]]:
    """Record pings on a stream and their events; the stream's row lock orders them."""
    # Lock the stream's last sequence so concurrent senders on one stream queue up in order.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", stream)
    last = await conn.fetchval("SELECT max(sequence) FROM pings WHERE stream = $1", stream) or 0
    now = clock.now()
    pings = []
    for offset, message in enumerate(messages, start=1):
        pings.append(
            PingSent(
                ping_id=str(uuid.uuid4()),
                stream=stream,
                sequence=last + offset,
                message=message,
                sent_at_ns=time.time_ns(),
            )
        )
    await conn.execute(
        """INSERT INTO pings (ping_id, stream, sequence, message, sent_at)
           SELECT i, $1, q, m, $5
           FROM unnest($2::uuid[], $3::bigint[], $4::text[]) AS u(i, q, m)""",
        stream,
        [p.ping_id for p in pings],
        [p.sequence for p in pings],
        [p.message for p in pings],
        now,
    )
    await add_to_outbox(
        conn,
        SOURCE,
        [
            OutboxMessage(p, aggregate_id=stream, aggregate_version=p.sequence, topic=topic)
            for p in pings
        ],
        clock,
    )
    return [{"ping_id": p.ping_id, "stream": p.stream, "sequence": p.sequence} for p in pings]


async def apply_pings(conn: asyncpg.Connection, batch: Sequence[events.Event[PingSent]]) -> None:
    """The consumer's effect: one pong per ping."""
    applied_at = time.time_ns()
    # One statement for the whole run: unnest keeps the batch's order for applied_order.
    await conn.execute(
        """INSERT INTO pongs (ping_id, stream, sequence, sent_at_ns, applied_at_ns)
           SELECT i, s, q, t, $5
           FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[])
                WITH ORDINALITY AS u(i, s, q, t, n) ORDER BY n""",
        [e.data.ping_id for e in batch],
        [e.data.stream for e in batch],
        [e.data.sequence for e in batch],
        [e.data.sent_at_ns for e in batch],
        applied_at,
    )


async def unapplied_pings(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """Pings whose event the consumer has not applied: zero once the path has caught up."""
    count: int = await conn.fetchval(
        """SELECT count(*) FROM pings p
           WHERE NOT EXISTS (SELECT 1 FROM pongs q WHERE q.ping_id = p.ping_id)"""
    )
    return count


async def ping_status(conn: asyncpg.Connection, ping_id: uuid.UUID) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        """SELECT p.ping_id, p.stream, p.sequence, p.message, q.applied_at_ns IS NOT NULL AS applied
           FROM pings p LEFT JOIN pongs q USING (ping_id) WHERE p.ping_id = $1""",
        ping_id,
    )
    if row is None:
        return None
    return {**dict(row), "ping_id": str(row["ping_id"])}
