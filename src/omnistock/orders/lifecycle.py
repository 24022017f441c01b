"""After confirmation, one transaction each: shipments (from inventory's events), delivery,
pickup and collection, the try-before-you-buy trial and returns; and which lifecycle step the
saga worker runs next, derived from the order's state so that a step finishing, a customer's
answer and a clock tick all reach the same conclusion."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg

from omnistock.contracts import orders as contract
from omnistock.orders import domain, repository, saga
from omnistock.orders.changes import change_status, record_change, start_compensation
from omnistock.orders.domain import CancelReason, Decision, OrderStatus, Windows
from omnistock.platform.clock import Clock

S = OrderStatus


class NotFound(Exception):
    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"no {what} {key}")
        self.what = what


class Refused(Exception):
    """The order is not in a state where this makes sense, or the request contradicts it;
    ``field`` names what to look at."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.detail = detail


async def _locked(conn: asyncpg.Connection, order_id: str) -> asyncpg.Record:
    row = await repository.order(conn, order_id, for_update=True)
    if row is None:
        raise NotFound("order", order_id)
    return row


def _schedule(step: str | None, now: datetime) -> dict[str, Any]:
    return {
        "step": step,
        "step_started_at": now if step else None,
        "step_attempts": 0,
        "next_attempt_at": now if step else None,
        "last_error": None,
    }


async def next_step(
    conn: asyncpg.Connection, row: asyncpg.Record | dict[str, Any], now: datetime
) -> str | None:
    """The lifecycle step the order needs now, if any."""
    status = OrderStatus(row["status"])
    if status in domain.AFTER_DELIVERY:
        return saga.SETTLE_PAYMENT.name
    if status is S.IN_TRIAL:
        lines = await repository.lines(conn, row["order_id"])
        if now >= row["trial_ends_at"] or all(x["decision"] for x in lines):
            return saga.SETTLE_PAYMENT.name
    if status is S.COMPLETED and row["points"] == "held":
        return saga.COMMIT_POINTS.name
    if status in (S.IN_TRIAL, S.COMPLETED, S.CANCELLED) and await repository.has_received_returns(
        conn, row["order_id"]
    ):
        return saga.PROCESS_RETURNS.name
    return None


async def wake(
    conn: asyncpg.Connection, clock: Clock, row: dict[str, Any] | asyncpg.Record
) -> None:
    """Schedule what the order needs now, unless a step is under way (it looks again when it
    ends)."""
    if row["step"] is not None:
        return
    now = clock.now()
    following = await next_step(conn, row, now)
    if following is not None:
        await repository.update_order(conn, row["order_id"], **_schedule(following, now))


# -- shipments and delivery --


async def _shipment_event(
    conn: asyncpg.Connection, row: dict[str, Any] | asyncpg.Record, shipment_id: str, status: str
) -> contract.ShipmentUpdated:
    items = [
        contract.ItemCount(a["sku"], a["quantity"])
        for a in await repository.allocations(conn, row["order_id"])
        if a["shipment_id"] == shipment_id and a["sku"] is not None
    ]
    return contract.ShipmentUpdated(
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        version=row["version"] + 1,
        shipment_id=shipment_id,
        status=status,
        items=items,
    )


async def record_shipment(
    conn: asyncpg.Connection, clock: Clock, order_id: str, allocation_id: str, shipment_id: str
) -> None:
    """Inventory shipped one of the order's allocations; once all have left, the order is
    shipped. Redelivered events change nothing."""
    row = await repository.order(conn, order_id, for_update=True)
    if row is None:
        return  # an allocation of an order placed elsewhere (e.g. at a till)
    if not await repository.ship_allocation(
        conn, order_id, allocation_id, shipment_id, clock.now()
    ):
        return
    event = await _shipment_event(conn, row, shipment_id, "shipped")
    current = await record_change(conn, clock, row, "shipment_shipped", event)
    await ship_if_complete(conn, clock, current)


async def ship_if_complete(
    conn: asyncpg.Connection, clock: Clock, row: dict[str, Any] | asyncpg.Record
) -> None:
    if row["status"] != S.CONFIRMED:
        return  # not confirmed yet: the confirmation looks again
    allocations = await repository.allocations(conn, row["order_id"])
    if allocations and all(a["shipment_id"] for a in allocations):
        await change_status(conn, clock, row, S.SHIPPED)


async def deliver(
    conn: asyncpg.Connection, clock: Clock, order_id: str, shipment_id: str, windows: Windows
) -> None:
    """The carrier handed a parcel to the customer; with every parcel delivered the order is
    delivered and settles (or its trial begins)."""
    row = await _locked(conn, order_id)
    if row["delivery"]["kind"] != "home":
        raise Refused("shipment_id", "a store or locker parcel is collected, not delivered")
    now = clock.now()
    before = await repository.deliver_shipment(conn, order_id, shipment_id, now)
    if before is None:
        raise NotFound("shipment", shipment_id)
    if before == "delivered":
        return
    event = await _shipment_event(conn, row, shipment_id, "delivered")
    current = await record_change(conn, clock, row, "shipment_delivered", event)
    if current["status"] != S.SHIPPED:
        return  # other parcels are still to leave
    if any(s["status"] != "delivered" for s in await repository.shipments(conn, order_id)):
        return
    delivered = await change_status(conn, clock, current, S.DELIVERED, delivered_at=now)
    await _after_delivery(conn, clock, delivered, windows)


async def ready_for_pickup(
    conn: asyncpg.Connection, clock: Clock, order_id: str, pickup_code: str | None
) -> str:
    """The parcel reached the store or locker; the customer collects it with the code."""
    row = await _locked(conn, order_id)
    if row["delivery"]["kind"] == "home":
        raise Refused("delivery", "a home delivery is not picked up")
    if row["status"] == S.READY_FOR_PICKUP:
        code: str = row["pickup_code"]
        return code
    if row["status"] != S.SHIPPED:
        raise Refused("status", f"the order is {row['status']}: not shipped yet")
    code = pickup_code or f"{secrets.randbelow(10**8):08d}"
    await change_status(conn, clock, row, S.READY_FOR_PICKUP, pickup_code=code)
    return code


async def collect(
    conn: asyncpg.Connection, clock: Clock, order_id: str, pickup_code: str, windows: Windows
) -> None:
    row = await _locked(conn, order_id)
    if row["status"] in (S.COLLECTED, S.IN_TRIAL, S.COMPLETED) and row["pickup_code"]:
        if not secrets.compare_digest(row["pickup_code"], pickup_code):
            raise Refused("pickup_code", "does not match")
        return  # collected already
    if row["status"] != S.READY_FOR_PICKUP:
        raise Refused("status", f"the order is {row['status']}: not ready for pickup")
    if not secrets.compare_digest(row["pickup_code"], pickup_code):
        raise Refused("pickup_code", "does not match")
    collected = await change_status(conn, clock, row, S.COLLECTED, delivered_at=clock.now())
    await _after_delivery(conn, clock, collected, windows)


async def _after_delivery(
    conn: asyncpg.Connection, clock: Clock, row: dict[str, Any], windows: Windows
) -> None:
    now = clock.now()
    if row["payment_method"] != "try_before_you_buy":
        await repository.update_order(
            conn, row["order_id"], **_schedule(saga.SETTLE_PAYMENT.name, now)
        )
        return
    ends = now + windows.trial(row["channel_id"])
    await change_status(
        conn,
        clock,
        row,
        S.IN_TRIAL,
        trial_ends_at=ends,
        **_schedule(saga.OPEN_TRIAL.name, now),
    )


async def parcel_expired(conn: asyncpg.Connection, clock: Clock, order_id: str) -> None:
    """Nobody collected the parcel in time: it goes back to the sender as a return (restocked
    when it arrives) and the order is cancelled, its payment voided (nothing was charged) and
    its points given back. A redelivered event changes nothing."""
    row = await repository.order(conn, order_id, for_update=True)
    if row is None or row["status"] != S.READY_FOR_PICKUP:
        return
    lines = [
        (x["sku"], x["quantity"], x["unit_price"]) for x in await repository.lines(conn, order_id)
    ]
    current = await _add_return(conn, clock, row, "uncollected", 0, "not collected", lines)
    await start_compensation(
        conn, clock, current, CancelReason.NOT_COLLECTED, "the parcel was not collected in time"
    )


# -- the trial --


async def decide(
    conn: asyncpg.Connection, clock: Clock, order_id: str, decisions: dict[str, Decision]
) -> None:
    """The customer keeps or sends back lines during the trial. An answer stands: the same
    answer again changes nothing, a different one is refused."""
    row = await _locked(conn, order_id)
    now = clock.now()
    if row["status"] != S.IN_TRIAL or now >= row["trial_ends_at"]:
        raise Refused("status", f"the order is {row['status']}: no trial under way")
    lines = {x["sku"]: x for x in await repository.lines(conn, order_id)}
    fresh: dict[str, str] = {}
    for sku, decision in decisions.items():
        line = lines.get(sku)
        if line is None:
            raise Refused(f"lines.{sku}", "not a line of this order")
        if line["decision"] is None:
            fresh[sku] = decision.value
        elif line["decision"] != decision:
            raise Refused(f"lines.{sku}", f"decided already: {line['decision']}")
    if not fresh:
        return
    await repository.decide_lines(conn, order_id, fresh, now)
    sent_back = [
        (sku, lines[sku]["quantity"], lines[sku]["unit_price"])
        for sku, d in fresh.items()
        if d == Decision.RETURN
    ]
    current: dict[str, Any] | asyncpg.Record = row
    if sent_back:
        current = await _add_return(conn, clock, row, "trial", 0, None, sent_back)
    await wake(conn, clock, current)


async def close_trials(conn: asyncpg.Connection, clock: Clock, limit: int = 100) -> int:
    """Trials whose window closed without every answer: what is undecided is kept, and the
    payment settles (a periodic job)."""
    order_ids = await repository.trials_ended(conn, clock.now(), limit)
    for order_id in order_ids:
        await wake(conn, clock, await _locked(conn, order_id))
    return len(order_ids)


# -- returns --


async def _add_return(
    conn: asyncpg.Connection,
    clock: Clock,
    row: dict[str, Any] | asyncpg.Record,
    kind: str,
    refund_amount: int,
    reason: str | None,
    lines: list[tuple[str, int, int]],
) -> dict[str, Any]:
    return_id = str(uuid.uuid4())
    await repository.add_return(
        conn, return_id, row["order_id"], kind, refund_amount, reason, lines, clock.now()
    )
    event = contract.ReturnUpdated(
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        version=row["version"] + 1,
        return_id=return_id,
        kind=kind,
        status="requested",
        refund_amount=refund_amount,
        items=[contract.ItemCount(sku, quantity) for sku, quantity, _ in lines],
    )
    changed = await record_change(conn, clock, row, "return_requested", event)
    return {**changed, "return_id": return_id}


async def request_return(
    conn: asyncpg.Connection,
    clock: Clock,
    order_id: str,
    wanted: dict[str, int],
    reason: str | None,
    windows: Windows,
) -> str:
    """A return (RMA) of units of a completed order, within the return window; refunded at
    the price paid once received."""
    row = await _locked(conn, order_id)
    if row["status"] not in domain.RETURNABLE:
        raise Refused("status", f"the order is {row['status']}: only a completed order is returned")
    if clock.now() > row["completed_at"] + windows.return_within:
        raise Refused("status", "the return window has closed")
    lines = {x["sku"]: x for x in await repository.lines(conn, order_id)}
    already = await repository.returned_quantities(conn, order_id)
    returned = []
    for sku, quantity in wanted.items():
        line = lines.get(sku)
        if line is None:
            raise Refused(f"lines.{sku}", "not a line of this order")
        kept = 0 if line["decision"] == Decision.RETURN else line["quantity"]
        left = kept - (already.get(sku, 0) if line["decision"] != Decision.RETURN else 0)
        if quantity > left:
            raise Refused(f"lines.{sku}.quantity", f"at most {left} can be returned")
        returned.append((sku, quantity, line["unit_price"]))
    refund = sum(quantity * price for _, quantity, price in returned)
    changed = await _add_return(conn, clock, row, "rma", refund, reason, returned)
    return str(changed["return_id"])


async def receive_return(
    conn: asyncpg.Connection,
    clock: Clock,
    order_id: str,
    return_id: str,
    location_id: str,
    sellable: bool,
) -> None:
    """The goods arrived at ``location_id``: they are restocked there and refunded."""
    row = await _locked(conn, order_id)
    before = await repository.receive_return(
        conn, order_id, return_id, location_id, sellable, clock.now()
    )
    if before is None:
        raise NotFound("return", return_id)
    if before["status"] != "requested":
        return  # received already
    event = contract.ReturnUpdated(
        order_id=row["order_id"],
        customer_id=row["customer_id"],
        version=row["version"] + 1,
        return_id=return_id,
        kind=before["kind"],
        status="received",
        refund_amount=before["refund_amount"],
        items=[
            contract.ItemCount(line["sku"], line["quantity"])
            for received in await repository.returns(conn, order_id, "received")
            if received["return_id"] == return_id
            for line in received["lines"]
        ],
    )
    await wake(conn, clock, await record_change(conn, clock, row, "return_received", event))


# -- the lifecycle steps' bookkeeping --


async def step_context(
    conn: asyncpg.Connection, order: saga.SagaOrder, step: str
) -> saga.SagaOrder:
    """What the step needs to know, read (without a lock) just before it runs."""
    context: dict[str, Any]
    if step == saga.OPEN_TRIAL.name:
        row = await repository.order(conn, order.order_id)
        assert row is not None
        context = {"trial_ends_at": row["trial_ends_at"]}
    elif step == saga.SETTLE_PAYMENT.name:
        lines = [
            domain.LineValue(
                x["sku"],
                x["quantity"],
                x["unit_price"],
                Decision(x["decision"]) if x["decision"] else None,
            )
            for x in await repository.lines(conn, order.order_id)
        ]
        context = {"kept_value": domain.kept_value(lines)}
    else:
        context = {"returns": await repository.returns(conn, order.order_id, "received")}
    return replace(order, context=context)


async def step_done(
    conn: asyncpg.Connection,
    clock: Clock,
    row: asyncpg.Record,
    step: saga.Step,
    outcome: saga.Done,
    released: dict[str, Any],
) -> None:
    now = clock.now()
    current: dict[str, Any] = {**dict(row), **released, "step": None}
    await repository.update_order(conn, row["order_id"], **released, **_schedule(None, now))
    for settled in await repository.settle_returns(conn, list(outcome.settled_returns), now):
        event = contract.ReturnUpdated(
            order_id=row["order_id"],
            customer_id=row["customer_id"],
            version=current["version"] + 1,
            return_id=settled["return_id"],
            kind=settled["kind"],
            status="settled",
            refund_amount=settled["refund_amount"],
            items=[contract.ItemCount(x["sku"], x["quantity"]) for x in settled["lines"]],
        )
        current = await record_change(conn, clock, current, "return_settled", event)
    if step.reaches is not None:
        await repository.keep_undecided(conn, row["order_id"], now)
        current = await change_status(
            conn, clock, current, step.reaches, during=step.name, completed_at=now
        )
    await wake(conn, clock, current)
