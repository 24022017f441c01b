"""The SQL of the payments service: payments, their operations, history and PSP webhooks.

Lock order, everywhere: the payment row, then its operation rows. The recovery job claims
operations with SKIP LOCKED and never waits, so no two transactions wait on each other in a
cycle.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from omnistock.payments.domain import Method, Operation, OperationKind, Payment, Status, Trigger
from omnistock.platform.outbox import OutboxRows, insert_rows
from omnistock.platform.outbox import written as outbox_written


class ConcurrentUpdate(Exception):
    """The payment changed since it was read: the version moved on."""


class OperationStatus:
    PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


@dataclass(frozen=True, slots=True)
class OperationRecord:
    operation: Operation
    payment_id: str
    status: str


@dataclass(frozen=True, slots=True)
class Ticket:
    """What it takes to send an operation to the PSP."""

    operation: Operation
    payment_id: str
    currency: str
    method: str
    payment_method_token: str | None
    sent_before: bool  # the PSP may have it already: ask before sending
    void_requested: bool


def new_id() -> str:
    return str(uuid.uuid4())


_STATE = """status, version, authorized, captured, capture_pending, released, refunded,
    refund_pending, payment_method_token, authorization_reference, authorization_expires_at,
    trial_ends_at, void_requested, expiry_warned_for, reauthorization_tried_for,
    trial_capture_tried_for"""
_STATE_FIELDS = [name.strip() for name in _STATE.split(",")]


def _state(payment: Payment) -> list[Any]:
    return [getattr(payment, name) for name in _STATE_FIELDS]


def _payment(row: asyncpg.Record) -> Payment:
    values = {name: row[name] for name in _STATE_FIELDS}
    values["status"] = Status(row["status"])
    values["void_requested"] = str(v) if (v := row["void_requested"]) else None
    return Payment(
        payment_id=str(row["payment_id"]),
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        method=Method(row["method"]),
        currency=row["currency"],
        amount=row["amount"],
        **values,
    )


History = Sequence[tuple[int, datetime, str, Any]]
"""A payment's new history entries: (version, occurred at, type, data)."""


async def write_payment(
    conn: asyncpg.Connection,
    payment: Payment,
    now: datetime,
    next_check: datetime | None,
    history: History,
    events: OutboxRows,
    *,
    expected_version: int | None = None,
) -> None:
    """The payment row, inserted (no ``expected_version``) or updated from
    ``expected_version``, with its new history entries and their events: one statement, which
    writes nothing when the payment is no longer that version."""
    state = _state(payment)
    after = 4 + len(state)  # the parameters after the row's state ($4 on)
    if expected_version is None:
        placeholders = ", ".join(f"${n}" for n in range(4, after))
        row = f"""INSERT INTO payments (payment_id, order_id, customer_id, method, currency,
                      amount, created_at, next_check_at, {_STATE}, updated_at)
                  VALUES ($1, ${after}, ${after + 1}, ${after + 2}, ${after + 3}, ${after + 4},
                          $2, $3, {placeholders}, $2)
                  RETURNING 1"""
        identity: list[Any] = [
            payment.order_id,
            payment.customer_id,
            payment.method.value,
            payment.currency,
            payment.amount,
        ]
    else:
        assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(_STATE_FIELDS, start=4))
        row = f"""UPDATE payments SET updated_at = $2, next_check_at = $3, {assignments}
                  WHERE payment_id = $1 AND version = ${after} RETURNING 1"""
        identity = [expected_version]
    entries = after + len(identity)
    written = await conn.fetchval(
        f"""WITH written AS ({row}),
            history AS (
                INSERT INTO payment_history (payment_id, version, occurred_at, type, data)
                SELECT $1, v, o, t, d
                FROM unnest(${entries}::bigint[], ${entries + 1}::timestamptz[],
                            ${entries + 2}::text[], ${entries + 3}::jsonb[]) AS h(v, o, t, d)
                WHERE EXISTS (SELECT FROM written)),
            event AS ({insert_rows(entries + 4, when="EXISTS (SELECT FROM written)")})
            SELECT count(*) FROM written""",
        payment.payment_id,
        now,
        next_check,
        *state,
        *identity,
        [entry[0] for entry in history],
        [entry[1] for entry in history],
        [entry[2] for entry in history],
        [entry[3] for entry in history],
        *events,
    )
    await outbox_written(conn)
    if written != 1:
        raise ConcurrentUpdate(
            f"payment {payment.payment_id} is no longer version {expected_version}"
        )


async def load_payment(
    conn: asyncpg.Connection, payment_id: str, *, lock: bool = False
) -> Payment | None:
    row = await conn.fetchrow(
        "SELECT * FROM payments WHERE payment_id = $1" + (" FOR UPDATE" if lock else ""),
        payment_id,
    )
    return _payment(row) if row else None


async def due_payments(conn: asyncpg.Connection, now: datetime, limit: int) -> list[Payment]:
    """Payments some automatic step is due for, locked; those another replica holds are left."""
    rows = await conn.fetch(
        """SELECT * FROM payments WHERE next_check_at <= $1
           ORDER BY next_check_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )
    return [_payment(row) for row in rows]


async def postpone_check(conn: asyncpg.Connection, payment_id: str, until: datetime) -> None:
    await conn.execute(
        "UPDATE payments SET next_check_at = $2 WHERE payment_id = $1", payment_id, until
    )


async def insert_operations(
    conn: asyncpg.Connection,
    payment_id: str,
    operations: Sequence[Operation],
    now: datetime,
    *,
    next_attempt_at: datetime,
    sent: bool,
) -> None:
    """Record operations before they are sent. ``sent``: the caller sends them at once (the
    recovery job then asks the PSP before sending again); else the recovery job sends them."""
    await conn.executemany(
        """INSERT INTO payment_operations (operation_id, payment_id, kind, amount,
               target_reference, trigger, status, attempts, next_attempt_at, requested_at)
           VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $8, $9)""",
        [
            (
                op.operation_id,
                payment_id,
                op.kind.value,
                op.amount,
                op.target_reference,
                op.trigger.value,
                int(sent),
                next_attempt_at,
                now,
            )
            for op in operations
        ],
    )


def _operation(row: asyncpg.Record) -> Operation:
    return Operation(
        str(row["operation_id"]),
        OperationKind(row["kind"]),
        row["amount"],
        row["target_reference"],
        Trigger(row["trigger"]),
    )


async def load_operation(
    conn: asyncpg.Connection, operation_id: str, *, lock: bool = False
) -> OperationRecord | None:
    row = await conn.fetchrow(
        "SELECT * FROM payment_operations WHERE operation_id = $1"
        + (" FOR UPDATE" if lock else ""),
        operation_id,
    )
    if row is None:
        return None
    return OperationRecord(_operation(row), str(row["payment_id"]), row["status"])


async def resolve_operation(
    conn: asyncpg.Connection,
    operation_id: str,
    *,
    succeeded: bool,
    reference: str | None,
    reason: str | None,
    now: datetime,
) -> None:
    await conn.execute(
        """UPDATE payment_operations SET status = $2, psp_reference = $3, failure_reason = $4,
               resolved_at = $5, next_attempt_at = NULL
           WHERE operation_id = $1""",
        operation_id,
        OperationStatus.SUCCEEDED if succeeded else OperationStatus.FAILED,
        reference,
        None if succeeded else reason,
        now,
    )


async def retry_later(
    conn: asyncpg.Connection | asyncpg.Pool, operation_id: str, at: datetime
) -> None:
    """The PSP's answer is unknown or not decided yet: the recovery job asks again at ``at``."""
    await conn.execute(
        """UPDATE payment_operations SET attempts = attempts + 1, next_attempt_at = $2
           WHERE operation_id = $1 AND status = 'pending'""",
        operation_id,
        at,
    )


_TICKETS = """SELECT o.*, p.currency, p.method, p.payment_method_token,
                     p.void_requested IS NOT NULL AS void_requested
              FROM payment_operations o JOIN payments p USING (payment_id)"""


def _ticket(row: asyncpg.Record, sent_before: bool) -> Ticket:
    return Ticket(
        _operation(row),
        str(row["payment_id"]),
        row["currency"],
        row["method"],
        row["payment_method_token"],
        sent_before,
        row["void_requested"],
    )


async def pending_tickets(
    conn: asyncpg.Connection | asyncpg.Pool, operation_ids: Sequence[str]
) -> list[Ticket]:
    rows = await conn.fetch(
        f"{_TICKETS} WHERE o.operation_id = ANY($1::uuid[]) AND o.status = 'pending'",
        list(operation_ids),
    )
    return [_ticket(row, sent_before=False) for row in rows]


async def claim_due(
    conn: asyncpg.Connection, now: datetime, limit: int, retry_after: timedelta, most: timedelta
) -> list[Ticket]:
    """Take over pending operations whose time has come; each is not due again before a
    back-off (doubling per attempt) in case this attempt dies too."""
    rows = await conn.fetch(
        """UPDATE payment_operations o SET attempts = attempts + 1,
               next_attempt_at = $1
                   + LEAST($3::interval * power(2, LEAST(attempts, 30)), $4::interval)
           WHERE operation_id IN (
               SELECT operation_id FROM payment_operations
               WHERE status = 'pending' AND next_attempt_at <= $1
               ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
           RETURNING operation_id, attempts""",
        now,
        limit,
        retry_after,
        most,
    )
    if not rows:
        return []
    attempts = {row["operation_id"]: row["attempts"] for row in rows}
    found = await conn.fetch(f"{_TICKETS} WHERE o.operation_id = ANY($1::uuid[])", list(attempts))
    return [_ticket(row, sent_before=attempts[row["operation_id"]] > 1) for row in found]


async def refundable_captures(conn: asyncpg.Connection, payment_id: str) -> list[tuple[str, int]]:
    """Each capture of the payment and what is still refundable of it, oldest first."""
    rows = await conn.fetch(
        """SELECT c.psp_reference, c.amount - coalesce(sum(r.amount), 0)::bigint AS refundable
           FROM payment_operations c
           LEFT JOIN payment_operations r ON r.kind = 'refund' AND r.status <> 'failed'
                AND r.payment_id = c.payment_id AND r.target_reference = c.psp_reference
           WHERE c.payment_id = $1 AND c.kind = 'capture' AND c.status = 'succeeded'
           GROUP BY c.operation_id ORDER BY c.resolved_at, c.operation_id""",
        payment_id,
    )
    return [(row["psp_reference"], row["refundable"]) for row in rows]


async def payment_by_authorization(conn: asyncpg.Connection, reference: str) -> str | None:
    found = await conn.fetchval(
        "SELECT payment_id FROM payments WHERE authorization_reference = $1", reference
    )
    return str(found) if found else None


async def record_webhook(
    conn: asyncpg.Connection, event_id: str, type_: str, now: datetime
) -> bool:
    """True the first time an event id is seen; a redelivery gets False."""
    inserted = await conn.fetchval(
        """INSERT INTO psp_webhooks (event_id, type, received_at, result) VALUES ($1, $2, $3, '')
           ON CONFLICT DO NOTHING RETURNING true""",
        event_id,
        type_,
        now,
    )
    return bool(inserted)


async def forget_webhooks(conn: asyncpg.Connection, before: datetime) -> int:
    """Forget event ids received before ``before``: a PSP has stopped redelivering by then,
    and a decision delivered once more would find its operation resolved anyway."""
    status = await conn.execute("DELETE FROM psp_webhooks WHERE received_at < $1", before)
    return int(status.split()[-1])


async def webhook_result(conn: asyncpg.Connection, event_id: str, result: str) -> None:
    await conn.execute("UPDATE psp_webhooks SET result = $2 WHERE event_id = $1", event_id, result)


# -- reads for the API --


async def payment_row(conn: asyncpg.Connection, payment_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM payments WHERE payment_id = $1", payment_id
    )
    return row


async def payments_of_order(
    conn: asyncpg.Connection, order_id: str, customer_id: str | None
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT * FROM payments WHERE order_id = $1 AND ($2::text IS NULL OR customer_id = $2)
           ORDER BY created_at, payment_id""",
        order_id,
        customer_id,
    )
    return rows


async def operations_of(
    conn: asyncpg.Connection, payment_id: str, only: Sequence[str] | None = None
) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT * FROM payment_operations
           WHERE payment_id = $1 AND ($2::uuid[] IS NULL OR operation_id = ANY($2::uuid[]))
           ORDER BY requested_at, operation_id""",
        payment_id,
        None if only is None else list(only),
    )
    return rows


async def history_of(conn: asyncpg.Connection, payment_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT version, occurred_at, type, data FROM payment_history
           WHERE payment_id = $1 ORDER BY version""",
        payment_id,
    )
    return rows
