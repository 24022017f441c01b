"""Use cases of the orders service, one transaction each: place an order, cancel it, and the
saga's bookkeeping (claim the due steps, record their outcomes, cancel overdue orders).

Every status change goes through ``change_status``: the transition table is checked, the
version goes up by one, and the history row and the event are written in the same
transaction as the change."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from omnistock.contracts import orders as contract
from omnistock.orders import SERVICE, domain, lifecycle, repository, saga
from omnistock.orders.changes import change_status, message, start_compensation
from omnistock.orders.domain import CancelReason, OrderStatus, RetryPolicy
from omnistock.platform.clock import Clock
from omnistock.platform.outbox import outbox_rows


class NotFound(Exception):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"no order {order_id}")
        self.order_id = order_id


class NotCancellable(Exception):
    def __init__(self, order_id: str, status: str) -> None:
        super().__init__(f"order {order_id} is {status}: too late to cancel")
        self.status = status


@dataclass(frozen=True, slots=True)
class Claim:
    """A saga step this worker holds until it records the outcome (or the lease lapses)."""

    order: saga.SagaOrder
    step: str
    lease_id: str


# -- intake --


async def place_order(
    conn: asyncpg.Connection, clock: Clock, order: dict[str, Any], confirm_within: timedelta
) -> str:
    """The order, its lines, its first history row and OrderPlaced: one transaction."""
    view = await placed_order(conn, clock, order, confirm_within)
    order_id: str = view["order_id"]
    return order_id


async def placed_order(
    conn: asyncpg.Connection, clock: Clock, order: dict[str, Any], confirm_within: timedelta
) -> dict[str, Any]:
    """``place_order``, answered with the order's view as ``order_view`` would read it back:
    built from what was written rather than read again (six queries)."""
    now = clock.now()
    order_id = str(uuid.uuid4())
    total = sum(line["quantity"] * line["unit_price"] for line in order["lines"])
    row = {
        **order,
        "order_id": uuid.UUID(order_id),
        "reservation_id": uuid.UUID(order["reservation_id"]),
        "total": total,
        "step": saga.first_step(),
        "placed_at": now,
        "confirm_by": now + confirm_within,
    }
    event = contract.OrderPlaced(
        order_id=order_id,
        customer_id=order["customer_id"],
        channel_id=order["channel_id"],
        platform=order["platform"],
        version=1,
        status=OrderStatus.PLACED.value,
        reservation_id=order["reservation_id"],
        currency=order["currency"],
        total=total,
        lines=[
            contract.OrderLine(x["sku"], x["quantity"], x["unit_price"]) for x in order["lines"]
        ],
        delivery=order["delivery"]["kind"],
        payment_method=order["payment_method"],
        loyalty_points=order["loyalty_points"],
    )
    await repository.insert_order(
        conn, row, outbox_rows(SERVICE, [message(event, order_id, 1)], clock)
    )
    written = {
        **row,
        "order_id": order_id,
        "reservation_id": str(row["reservation_id"]),
        "status": OrderStatus.PLACED.value,
        "version": 1,
        "payment_id": None,
        "points": None,
        "pickup_code": None,
        "trial_ends_at": None,
        "cancel_reason": None,
        "cancel_detail": None,
        "updated_at": now,
        "delivered_at": None,
        "completed_at": None,
    }
    lines = [{**line, "decision": None} for line in order["lines"]]
    history = {
        "version": 1,
        "status": OrderStatus.PLACED.value,
        "previous_status": None,
        "reason": None,
        "step": None,
        "changed_at": now,
    }
    return _view(written, lines, [history], [], [], [])


async def cancel_order(
    conn: asyncpg.Connection, clock: Clock, order_id: str, reason: CancelReason
) -> None:
    """A customer or staff cancels before shipment; cancelling again changes nothing."""
    row = await repository.order(conn, order_id, for_update=True)
    if row is None:
        raise NotFound(order_id)
    status = OrderStatus(row["status"])
    if status in (OrderStatus.CANCELLING, OrderStatus.CANCELLED):
        return
    if status not in domain.CANCELLABLE:
        raise NotCancellable(order_id, status.value)
    if any(a["shipment_id"] for a in await repository.allocations(conn, order_id)):
        raise NotCancellable(order_id, "partly shipped")
    await start_compensation(conn, clock, row, reason, None)


# -- the saga's bookkeeping --


async def claim_due(
    conn: asyncpg.Connection, clock: Clock, lease: timedelta, limit: int
) -> list[Claim]:
    now = clock.now()
    rows = await repository.claim_due(conn, now, now + lease, limit)
    return [Claim(saga_order(row), row["step"], row["lease_id"]) for row in rows]


def saga_order(row: Mapping[str, Any]) -> saga.SagaOrder:
    return saga.SagaOrder(
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        reservation_id=row["reservation_id"],
        payment_method=row["payment_method"],
        payment_token=row["payment_token"],
        total=row["total"],
        currency=row["currency"],
        cancel_reason=row["cancel_reason"],
        payment_id=row["payment_id"],
        channel_id=row["channel_id"],
        loyalty_points=row["loyalty_points"],
    )


@dataclass(frozen=True, slots=True)
class Policies:
    forward: RetryPolicy
    compensation: RetryPolicy
    payment_poll: timedelta


async def record_outcome(
    conn: asyncpg.Connection,
    clock: Clock,
    claim: Claim,
    outcome: saga.Outcome,
    policies: Policies,
    *,
    carry_on_for: timedelta | None = None,
) -> Claim | None:
    """What a step's call came to, recorded under the order's row lock (no lock was held
    while the call ran). With ``carry_on_for``, a step done that leads straight to the next
    step of the saga (or of its compensation) keeps the order leased for that long and
    returns the claim of that next step: the worker goes on without claiming it again."""
    row = await repository.order(conn, claim.order.order_id, for_update=True)
    if row is None or row["lease_id"] != claim.lease_id:
        return None  # the lease lapsed and another worker took the step over: its answer counts
    now = clock.now()
    facts = outcome.facts if isinstance(outcome, saga.Done) else {}
    released = {"lease_id": None, "leased_until": None, **facts}
    if isinstance(outcome, saga.Done) and outcome.allocations:
        # Kept even if the order was cancelled meanwhile: its shipments are matched by them.
        await repository.save_allocations(conn, claim.order.order_id, list(outcome.allocations))
    if row["step"] != claim.step:
        # Cancelled while the call ran: compensation (which covers this step) goes next.
        await repository.update_order(conn, claim.order.order_id, **released, updated_at=now)
        return None
    index, step, compensating = saga.step_named(claim.step)
    # Compensations and the lifecycle steps (goods have left: nothing to undo) never give up.
    lifecycle_step = step.compensation is None
    policy = policies.compensation if compensating or lifecycle_step else policies.forward
    if isinstance(outcome, saga.Done):
        if lifecycle_step:
            await lifecycle.step_done(conn, clock, row, step, outcome, released)
            return None
        lease = None if carry_on_for is None else (str(uuid.uuid4()), now + carry_on_for)
        return await _step_done(conn, clock, row, index, step, compensating, released, lease)
    if isinstance(outcome, saga.Refused) and not compensating and not lifecycle_step:
        await repository.update_order(conn, claim.order.order_id, **released)
        await start_compensation(conn, clock, row, outcome.reason, outcome.detail)
    elif isinstance(outcome, saga.Pending):
        await repository.update_order(
            conn,
            claim.order.order_id,
            **released,
            next_attempt_at=now + policies.payment_poll,
            last_error=outcome.detail,
            updated_at=now,
        )
    else:
        attempts = row["step_attempts"] + 1
        detail = outcome.detail if isinstance(outcome, saga.Failed | saga.Refused) else ""
        if policy.gives_up(attempts):
            await repository.update_order(conn, claim.order.order_id, **released)
            await start_compensation(
                conn, clock, row, CancelReason.STEP_FAILED, f"{claim.step}: {detail}"
            )
            return None
        await repository.update_order(
            conn,
            claim.order.order_id,
            **released,
            step_attempts=attempts,
            next_attempt_at=now + policy.delay(attempts),
            last_error=detail,
            updated_at=now,
        )
    return None


async def _step_done(
    conn: asyncpg.Connection,
    clock: Clock,
    row: asyncpg.Record,
    index: int,
    step: saga.Step,
    compensating: bool,
    released: dict[str, Any],
    lease: tuple[str, datetime] | None,
) -> Claim | None:
    """The order moves on to its next step, or to its end; the claim of that next step if
    ``lease`` (id, until) is given to hold it by. A worker carrying the order on (``lease``)
    passes the steps the order does not need in this transaction, rather than running each
    for nothing in one of its own."""
    now = clock.now()
    following = saga.next_compensation(index) if compensating else saga.next_forward(index)
    if lease is not None:
        following = saga.first_needed(following, saga_order({**dict(row), **released}))
    moved = {
        **released,
        "step": following,
        "step_started_at": now if following else None,
        "step_attempts": 0,
        # Due since the order was placed: claims take the longest due first (``claim_due``).
        "next_attempt_at": row["placed_at"] if following else None,
        "last_error": None,
    }
    if following is not None and lease is not None:
        moved.update(lease_id=uuid.UUID(lease[0]), leased_until=lease[1])
    if compensating:
        if following is not None:
            await repository.update_order(conn, row["order_id"], **moved, updated_at=now)
            return _carried_on({**dict(row), **moved}, lease)
        cancelled = await change_status(
            conn,
            clock,
            row,
            OrderStatus.CANCELLED,
            reason=row["cancel_reason"],
            payment_token=None,
            **moved,
        )
        # Goods that come back after all (an uncollected parcel) are restocked on receipt.
        await lifecycle.wake(conn, clock, cancelled)
        return None
    if following is None:
        current: asyncpg.Record | dict[str, Any] = row
        if step.reaches is not None:
            current = await change_status(conn, clock, row, step.reaches, during=step.name)
        # The last step is through: confirmed, in the same write as the step's own columns.
        # The PSP token is not needed any more.
        confirmed = await change_status(
            conn, clock, current, OrderStatus.CONFIRMED, **{**moved, "payment_token": None}
        )
        # Shipment events that came before the confirmation (a crash between the two).
        await lifecycle.ship_if_complete(conn, clock, confirmed)
        return None
    if step.reaches is None:
        await repository.update_order(conn, row["order_id"], **moved, updated_at=now)
        current = {**dict(row), **moved}
    else:
        current = await change_status(conn, clock, row, step.reaches, during=step.name, **moved)
    return _carried_on(current, lease)


def _carried_on(row: Mapping[str, Any], lease: tuple[str, datetime] | None) -> Claim | None:
    if lease is None:
        return None
    return Claim(saga_order(row), row["step"], lease[0])


async def cancel_overdue(conn: asyncpg.Connection, clock: Clock, limit: int = 100) -> int:
    """Orders not confirmed by their deadline cancel themselves (a periodic job)."""
    order_ids = await repository.overdue(conn, clock.now(), limit)
    for order_id in order_ids:
        row = await repository.order(conn, order_id, for_update=True)
        assert row is not None
        await start_compensation(conn, clock, row, CancelReason.CONFIRMATION_TIMED_OUT, None)
    return len(order_ids)


# -- views --


async def order_view(conn: asyncpg.Connection, order_id: str) -> dict[str, Any] | None:
    row = await repository.order(conn, order_id)
    if row is None:
        return None
    lines = await repository.lines(conn, order_id)
    history = await repository.history(conn, order_id)
    allocations = await repository.allocations(conn, order_id)
    shipments = await repository.shipments(conn, order_id)
    returns = await repository.returns(conn, order_id)
    return _view(row, lines, history, allocations, shipments, returns)


def _view(
    row: Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]],
    history: Sequence[Mapping[str, Any]],
    allocations: Sequence[Mapping[str, Any]],
    shipments: Sequence[Mapping[str, Any]],
    returns: Sequence[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "order_id": row["order_id"],
        "customer_id": row["customer_id"],
        "channel_id": row["channel_id"],
        "platform": row["platform"],
        "status": row["status"],
        "version": row["version"],
        "currency": row["currency"],
        "total": row["total"],
        "reservation_id": row["reservation_id"],
        "delivery": row["delivery"],
        "payment": {"method": row["payment_method"], "payment_id": row["payment_id"]},
        "loyalty_points": row["loyalty_points"],
        # Where the redeemed points stand: held, committed or released (null: none yet).
        "points_status": row["points"],
        "lines": [dict(line) for line in lines],
        "allocations": [dict(a) for a in allocations],
        "shipments": [instants(dict(x)) for x in shipments],
        "pickup_code": row["pickup_code"],
        "trial_ends_at": _instant(row["trial_ends_at"]),
        "returns": [instants(x) for x in returns],
        "cancel_reason": row["cancel_reason"],
        "cancel_detail": row["cancel_detail"],
        "step": row["step"],
        "placed_at": row["placed_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
        "delivered_at": _instant(row["delivered_at"]),
        "completed_at": _instant(row["completed_at"]),
        "history": [{**dict(h), "changed_at": h["changed_at"].isoformat()} for h in history],
    }


def _instant(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def instants(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


class BadCursor(ValueError):
    """A page cursor this service did not hand out."""


def _cursor(row: Mapping[str, Any]) -> str:
    mark = f"{row['placed_at'].isoformat()}|{row['order_id']}".encode()
    return base64.urlsafe_b64encode(mark).decode().rstrip("=")


def _after(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        mark = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        placed_at, order_id = mark.split("|")
        at = datetime.fromisoformat(placed_at)
        if at.tzinfo is None:
            raise ValueError("no time zone")
        return at, uuid.UUID(order_id)
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors too
        raise BadCursor(cursor) from exc


async def orders_of(
    conn: asyncpg.Connection, customer_id: str, limit: int, after: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the customer's orders, newest first, from the one after ``after`` (the
    cursor a previous page ended with); and the cursor of the next page, None at the end."""
    before = None if after is None else _after(after)
    rows = await repository.orders_of(conn, customer_id, limit + 1, before)
    page = [{**dict(row), "placed_at": row["placed_at"].isoformat()} for row in rows[:limit]]
    following = _cursor(rows[limit - 1]) if len(rows) > limit else None
    return page, following


async def owner_of(conn: asyncpg.Connection, order_id: str) -> str | None:
    owner: str | None = await conn.fetchval(
        "SELECT customer_id FROM orders WHERE order_id = $1", uuid.UUID(order_id)
    )
    return owner


async def stuck_orders(
    conn: asyncpg.Connection, clock: Clock, older_than: timedelta, limit: int = 100
) -> list[dict[str, Any]]:
    rows = await repository.stuck(conn, clock.now() - older_than, limit)
    # A step that followed another at once is due since its order was placed (for the order in
    # which claims take them): to whoever reads the report it became due when it started.
    return [
        {
            **dict(row),
            "step_started_at": row["step_started_at"].isoformat(),
            "next_attempt_at": max(row["next_attempt_at"], row["step_started_at"]).isoformat(),
        }
        for row in rows
    ]
