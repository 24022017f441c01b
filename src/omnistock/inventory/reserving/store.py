"""A batch's two statements: one reads everything it is planned against (under its SKU locks),
one writes everything it decided, the events included. A batch costs four round trips whatever
its size (with BEGIN and COMMIT), so the database's time goes into rows, not into waiting for
the next statement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import asyncpg
import orjson

from omnistock.inventory.domain import Source, StockLevel
from omnistock.inventory.repository import SKU_LOCKS, Channel
from omnistock.platform import idempotency
from omnistock.platform.outbox import OutboxRows, insert_rows, written
from omnistock.platform.problems import Problem


class AnswerKey(NamedTuple):
    """Where a request's answer is kept: its Idempotency-Key and the fingerprint of its body."""

    principal: str
    key: str
    fingerprint: str


@dataclass(slots=True)
class BatchState:
    """What the batch is planned against, read under its SKU locks."""

    answers: dict[tuple[str, str], idempotency.StoredAnswer | Problem]
    channels: dict[str, Channel]
    levels: dict[tuple[str, str], StockLevel]
    figures: dict[tuple[str, str], tuple[int, int]]  # published (available, version)
    customer_held: dict[tuple[str, str], dict[str, int]]


async def read_state(
    conn: asyncpg.Connection,
    skus: Sequence[str],
    channel_ids: Sequence[str],
    customers: Sequence[tuple[str, str]],
    holds_since: datetime,
    answer_keys: Sequence[AnswerKey],
) -> BatchState:
    """Lock the SKUs and read the state (migration 0002 says what is in it)."""
    document = await conn.fetchval(
        "SELECT reservation_batch_state($1, $2, $3, $4, $5, $6, $7, $8)::text",
        SKU_LOCKS,
        skus,
        channel_ids,
        [channel_id for channel_id, _ in customers],
        [customer_id for _, customer_id in customers],
        holds_since,
        [key.principal for key in answer_keys],
        [key.key for key in answer_keys],
    )
    state = orjson.loads(document)
    fingerprints = {(key.principal, key.key): key.fingerprint for key in answer_keys}
    customer_held: dict[tuple[str, str], dict[str, int]] = {}
    for channel_id, customer_id, sku, units in state["holds"]:
        customer_held.setdefault((channel_id, customer_id), {})[sku] = units
    return BatchState(
        {
            (principal, key): idempotency.answer_of(
                fingerprints[(principal, key)], request_hash, status, body
            )
            for principal, key, request_hash, status, body in state["answers"]
        },
        {
            channel_id: Channel(
                channel_id,
                cap,
                most_per_customer,
                tuple(
                    Source(location_id, priority, safety_stock, frozenset(capabilities))
                    for location_id, priority, safety_stock, capabilities in sources
                ),
            )
            for channel_id, cap, most_per_customer, sources in state["channels"]
        },
        {(row[0], row[1]): StockLevel(*row) for row in state["levels"]},
        {
            (channel_id, sku): (available, version)
            for channel_id, sku, available, version in state["figures"]
        },
        customer_held,
    )


class Reservations(NamedTuple):
    """The rows a batch inserts, column by column, as its statement takes them."""

    ids: list[str]
    channel_ids: list[str]
    client_ids: list[str]
    customer_ids: list[str | None]
    expiries: list[datetime]


class Lines(NamedTuple):
    reservation_ids: list[str]
    skus: list[str]
    location_ids: list[str]
    quantities: list[int]


class Answers(NamedTuple):
    principals: list[str]
    keys: list[str]
    fingerprints: list[str]
    bodies: list[bytes]


class Holds(NamedTuple):
    """Units to add to ``reserved``, one entry per stock row."""

    skus: list[str]
    location_ids: list[str]
    quantities: list[int]


class Figures(NamedTuple):
    """Availability figures that moved, with their next version."""

    channel_ids: list[str]
    skus: list[str]
    available: list[int]
    versions: list[int]


class StateMoved(RuntimeError):
    """A row the batch read under its locks changed before it wrote: a writer that does not take
    the SKU locks. The batch is rolled back rather than publish a wrong figure or version."""


# Each line's reservation is in the same statement (no foreign key checks it again: migration
# 0006). Each stock row and each figure is written from what was read under the SKU locks, which the
# transaction still holds: the counts returned say whether every one of them was.
_WRITE = f"""
    WITH reservation AS (
        INSERT INTO reservations
            (reservation_id, channel_id, client_id, customer_id, status, created_at, expires_at)
        SELECT i, c, k, u, 'active', $1, e
        FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
             AS x(i, c, k, u, e)),
    line AS (
        INSERT INTO reservation_lines (reservation_id, sku, location_id, quantity)
        SELECT * FROM unnest($7::uuid[], $8::text[], $9::text[], $10::int[])),
    answer AS (
        INSERT INTO idempotency_keys
            (principal, idempotency_key, request_hash, status_code, response_body)
        SELECT p, k, h, 201, b
        FROM unnest($11::text[], $12::text[], $13::text[], $14::bytea[]) AS a(p, k, h, b)),
    held AS (
        UPDATE stock s SET reserved = s.reserved + h.quantity, version = s.version + 1
        FROM unnest($15::text[], $16::text[], $17::int[]) AS h(sku, location_id, quantity)
        WHERE s.sku = h.sku AND s.location_id = h.location_id
        RETURNING 1),
    figure AS (
        INSERT INTO availability AS v (channel_id, sku, available, version)
        SELECT * FROM unnest($18::text[], $19::text[], $20::int[], $21::bigint[])
        ON CONFLICT (channel_id, sku) DO UPDATE
            SET available = EXCLUDED.available, version = EXCLUDED.version
            WHERE v.version = EXCLUDED.version - 1
        RETURNING 1),
    event AS ({insert_rows(22)})
    SELECT (SELECT count(*) FROM held) AS held, (SELECT count(*) FROM figure) AS figures"""


async def write(
    conn: asyncpg.Connection,
    now: datetime,
    reservations: Reservations,
    lines: Lines,
    answers: Answers,
    holds: Holds,
    figures: Figures,
    events: OutboxRows,
) -> None:
    counts = await conn.fetchrow(
        _WRITE, now, *reservations, *lines, *answers, *holds, *figures, *events
    )
    await written(conn)
    if counts["held"] != len(holds.skus) or counts["figures"] != len(figures.skus):
        raise StateMoved(
            f"{counts['held']} of {len(holds.skus)} stock rows and {counts['figures']} of "
            f"{len(figures.skus)} figures written as read"
        )
