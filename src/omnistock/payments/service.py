"""Payments use cases, each one short transaction: load and lock the payment, let the domain
decide, save it with its operations, history and events (the outbox).

No PSP call happens in here: a use case *records* operations, the driver sends them once the
transaction has committed, and ``record_outcome`` applies what the PSP said, in a transaction
of its own. No row lock is ever held across a call to the PSP.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from omnistock.contracts import payments as events
from omnistock.payments import repository
from omnistock.payments.domain import (
    Change,
    ChangeKind,
    InvalidTransition,
    Method,
    Operation,
    OperationKind,
    Outcome,
    Payment,
    Status,
)
from omnistock.payments.psp import Decision, PspResult
from omnistock.payments.repository import OperationRecord, OperationStatus, new_id
from omnistock.platform.clock import Clock
from omnistock.platform.outbox import OutboxMessage, outbox_rows

log = structlog.get_logger(__name__)

SOURCE = "/omnistock/payments"


class NotFound(Exception):
    def __init__(self, payment_id: str) -> None:
        super().__init__(f"payment {payment_id!r} not found")


class OrderHasPayment(Exception):
    """An order has one payment in play at a time."""


@dataclasses.dataclass(frozen=True, slots=True)
class Timing:
    """How the service times its automatic work."""

    lead: timedelta  # renew (or announce the expiry of) an authorization this long before
    retry_after: timedelta  # the recovery job takes over an operation left pending this long
    retry_at_most: timedelta  # the back-off between attempts doubles up to this


async def create_payment(
    conn: asyncpg.Connection,
    clock: Clock,
    timing: Timing,
    *,
    order_id: str,
    customer_id: str,
    method: Method,
    currency: str,
    amount: int,
    authorize_with: str | None = None,
) -> tuple[Payment, list[str]]:
    """The payment, and with ``authorize_with`` (the PSP's token) its authorization asked
    for in the same write: the ids of the operations for the caller to send after the commit,
    as ``start`` returns them."""
    now = clock.now()
    payment = Payment.create(
        payment_id=new_id(),
        order_id=order_id,
        customer_id=customer_id,
        method=method,
        currency=currency,
        amount=amount,
        now=now,
    )
    operations = []
    if authorize_with is not None:
        operations.append(payment.request_authorization(new_id(), authorize_with, now))
    try:
        await _save(conn, clock, timing, payment, None)
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name != "payments_one_live_per_order":
            raise
        raise OrderHasPayment(f"order {order_id!r} already has a payment in play") from None
    if operations:
        await repository.insert_operations(
            conn,
            payment.payment_id,
            operations,
            now,
            next_attempt_at=now + timing.retry_after,
            sent=True,
        )
    return payment, [op.operation_id for op in operations]


Action = Callable[[Payment, datetime], list[Operation]]
"""What a request does to a payment: the domain call, returning the operations to send."""


async def start(
    conn: asyncpg.Connection, clock: Clock, timing: Timing, payment_id: str, action: Action
) -> list[str]:
    """Apply ``action`` to the locked payment and record its operations; returns their ids.
    The caller sends them to the PSP after the commit; if it never does (a crash), the
    recovery job does once ``timing.retry_after`` has passed."""
    now = clock.now()
    payment = await _locked(conn, payment_id)
    version = payment.version
    operations = action(payment, now)
    await _save(conn, clock, timing, payment, version)
    await repository.insert_operations(
        conn, payment_id, operations, now, next_attempt_at=now + timing.retry_after, sent=True
    )
    return [op.operation_id for op in operations]


async def refund(
    conn: asyncpg.Connection, clock: Clock, timing: Timing, payment_id: str, amount: int
) -> list[str]:
    captures = await repository.refundable_captures(conn, payment_id)

    def action(payment: Payment, now: datetime) -> list[Operation]:
        return payment.request_refund([new_id() for _ in captures], amount, captures, now)

    return await start(conn, clock, timing, payment_id, action)


async def set_trial_window(
    conn: asyncpg.Connection, clock: Clock, timing: Timing, payment_id: str, ends_at: datetime
) -> None:
    payment = await _locked(conn, payment_id)
    version = payment.version
    payment.set_trial_window(ends_at, clock.now())
    await _save(conn, clock, timing, payment, version)


async def record_outcome(
    conn: asyncpg.Connection, clock: Clock, timing: Timing, operation_id: str, result: PspResult
) -> bool:
    """Apply the PSP's decision on an operation, once: the first of the PSP's answer, its
    webhook and the recovery job to get here applies it, the others find it resolved and change
    nothing. Returns whether it applied anything."""
    if result.decision is Decision.PENDING:
        return False
    found = await repository.load_operation(conn, operation_id)
    if found is None:
        return False
    approved = result.decision is Decision.APPROVED
    if found.status != OperationStatus.PENDING and not _late_approval(found, approved):
        # Resolved for good (an operation never goes back to pending): most webhooks repeat
        # what the PSP's answer said already, and need no lock to change nothing.
        return False
    payment = await _locked(conn, found.payment_id)  # the payment first, then its operation
    record = await repository.load_operation(conn, operation_id, lock=True)
    assert record is not None
    if record.status != OperationStatus.PENDING:
        if _late_approval(record, approved):
            # An authorization given up on came through after all: let go of it at once.
            await _release(conn, clock.now(), payment.payment_id, result.reference)
        return False
    now, version = clock.now(), payment.version
    await repository.resolve_operation(
        conn,
        operation_id,
        succeeded=approved,
        reference=result.reference,
        reason=result.reason,
        now=now,
    )
    if record.operation.kind is OperationKind.RELEASE:
        return True  # the payment is as it was
    outcome = Outcome(approved, result.reference, result.reason, result.expires_at)
    replaced = payment.resolve(record.operation, outcome, now)
    await _save(conn, clock, timing, payment, version)
    await _release(conn, now, payment.payment_id, replaced)
    return True


async def abandon_authorization(
    conn: asyncpg.Connection, clock: Clock, timing: Timing, operation_id: str
) -> None:
    """The PSP never received an authorization that a void is waiting for: it is never sent
    again, and the payment ends voided."""
    found = await repository.load_operation(conn, operation_id)
    if found is None:
        return
    payment = await _locked(conn, found.payment_id)
    record = await repository.load_operation(conn, operation_id, lock=True)
    if record is None or record.status != OperationStatus.PENDING:
        return
    now, version = clock.now(), payment.version
    payment.abandon_authorization(now)
    await repository.resolve_operation(
        conn, operation_id, succeeded=False, reference=None, reason="abandoned", now=now
    )
    await _save(conn, clock, timing, payment, version)


async def expire_authorization(
    conn: asyncpg.Connection, clock: Clock, timing: Timing, reference: str
) -> bool:
    """The PSP says an authorization lapsed. Only the payment's current authorization counts:
    one already replaced, voided or captured in full is old news."""
    payment_id = await repository.payment_by_authorization(conn, reference)
    if payment_id is None:
        return False
    payment = await _locked(conn, payment_id)
    current = payment.authorization_reference == reference
    if not current or payment.status is not Status.AUTHORIZED or payment.capture_pending:
        return False
    version = payment.version
    payment.expire(clock.now())
    await _save(conn, clock, timing, payment, version)
    return True


async def run_due_steps(
    conn: asyncpg.Connection, clock: Clock, timing: Timing, limit: int = 100
) -> int:
    """The scheduler: for each payment whose time has come, the automatic step due (renew an
    authorization, charge at the end of a trial, carry out a waiting void, announce or apply
    an expiry). Operations it starts are sent by the recovery job at once."""
    now = clock.now()
    due = await repository.due_payments(conn, now, limit)
    for payment in due:
        version = payment.version
        try:
            operation = payment.perform_due_step(new_id(), now, timing.lead)
        except InvalidTransition as exc:
            log.error("due step refused", payment_id=payment.payment_id, error=str(exc))
            await repository.postpone_check(conn, payment.payment_id, now + timedelta(hours=1))
            continue
        if payment.version == version:
            await repository.postpone_check(conn, payment.payment_id, now + timedelta(hours=1))
            continue
        await _save(conn, clock, timing, payment, version)
        if operation is not None:
            await repository.insert_operations(
                conn, payment.payment_id, [operation], now, next_attempt_at=now, sent=False
            )
    return len(due)


# -- saving --


def _authorizes(operation: Operation) -> bool:
    return operation.kind in (OperationKind.AUTHORIZE, OperationKind.REAUTHORIZE)


def _late_approval(record: OperationRecord, approved: bool) -> bool:
    """An authorization given up on, approved by the PSP after all: it is to be let go of."""
    return record.status == OperationStatus.FAILED and approved and _authorizes(record.operation)


async def _release(
    conn: asyncpg.Connection, now: datetime, payment_id: str, reference: str | None
) -> None:
    if reference is None:
        return
    release = Operation(new_id(), OperationKind.RELEASE, 0, reference)
    await repository.insert_operations(
        conn, payment_id, [release], now, next_attempt_at=now, sent=False
    )


async def _locked(conn: asyncpg.Connection, payment_id: str) -> Payment:
    payment = await repository.load_payment(conn, payment_id, lock=True)
    if payment is None:
        raise NotFound(payment_id)
    return payment


async def _save(
    conn: asyncpg.Connection,
    clock: Clock,
    timing: Timing,
    payment: Payment,
    version: int | None,
) -> None:
    """The payment (new, or updated from ``version``) with its recorded changes, each into the
    history and, as an event, into the outbox."""
    payloads = [(change, event_of(payment, change)) for change in payment.changes]
    messages = [
        OutboxMessage(
            payload,
            aggregate_id=payment.payment_id,
            aggregate_version=change.version,
            key=payment.order_id,
            correlation_id=payment.order_id,
        )
        for change, payload in payloads
    ]
    await repository.write_payment(
        conn,
        payment,
        clock.now(),
        payment.next_check(timing.lead),
        [(c.version, c.at, p.TYPE, dataclasses.asdict(p)) for c, p in payloads],
        outbox_rows(SOURCE, messages, clock),
        expected_version=version,
    )
    payment.changes.clear()


def event_of(payment: Payment, change: Change) -> Any:
    """The integration event of one recorded change."""
    common: dict[str, Any] = {
        "payment_id": payment.payment_id,
        "order_id": payment.order_id,
        "version": change.version,
        "status": change.status.value,
    }
    money: dict[str, Any] = {"amount": change.amount, "currency": payment.currency}
    operation = change.operation
    if operation is not None:
        money["operation_id"] = operation.operation_id
    expires = change.expires_at.isoformat() if change.expires_at else None
    kind = change.kind
    if kind is ChangeKind.CREATED:
        return events.PaymentCreated(
            **common, customer_id=payment.customer_id, method=payment.method.value, **money
        )
    if kind is ChangeKind.OPERATION_REQUESTED:
        assert operation is not None
        return events.OperationRequested(
            **common, operation=operation.kind.value, trigger=operation.trigger.value, **money
        )
    if kind is ChangeKind.AUTHORIZED:
        return events.PaymentAuthorized(**common, **money, expires_at=expires)
    if kind is ChangeKind.DECLINED:
        return events.PaymentDeclined(**common, **money, reason=change.reason or "declined")
    if kind is ChangeKind.REAUTHORIZED:
        return events.PaymentReauthorized(**common, **money, expires_at=expires)
    if kind is ChangeKind.CAPTURED:
        return events.PaymentCaptured(
            **common, **money, captured=change.captured, capturable=change.capturable
        )
    if kind is ChangeKind.VOIDED:
        return events.PaymentVoided(**common, **money, captured=change.captured)
    if kind is ChangeKind.REFUNDED:
        return events.PaymentRefunded(**common, **money, refunded=change.refunded)
    if kind is ChangeKind.OPERATION_FAILED:
        assert operation is not None
        return events.OperationFailed(
            **common, operation=operation.kind.value, **money, reason=change.reason or "refused"
        )
    if kind is ChangeKind.EXPIRING:
        return events.AuthorizationExpiring(
            **common,
            expires_at=expires or "",
            capturable=change.capturable,
            currency=payment.currency,
        )
    if kind is ChangeKind.EXPIRED:
        return events.AuthorizationExpired(**common, **money, captured=change.captured)
    assert kind is ChangeKind.TRIAL_WINDOW_SET
    return events.TrialWindowSet(**common, ends_at=expires or "")
