"""The order saga, orchestrated: its steps as data, each with an action and a compensation
that call another service and map its reply to a typed outcome.

Forward: commit the checkout reservation (inventory turns it into the order's allocations),
then create and authorize the payment (for pay later and try before you buy: approve the
deferred payment), then hold the loyalty points the customer redeems; the order is then
confirmed.

After confirmation the order waits for the world (shipments, delivery, the customer's
decisions during a trial); what follows then are lifecycle steps with no compensation, since
goods have left: open the payment's trial window, settle the payment (capture what was kept,
release or refund the rest), spend the held points, and process received returns (restock,
refund). They are retried
until they succeed; one that keeps failing shows in `omnistock orders stuck`.

Every call carries an idempotency key made of the order id and the step, or is idempotent by
nature (a reservation committed again for the same order answers as the first time), so a
retried step never applies twice. Compensations undo what their step may have done and are
idempotent too: they run, last step first, from the step the order had reached.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from omnistock.orders.domain import CancelReason, OrderStatus
from omnistock.orders.participants import Participants
from omnistock.platform.client import Answer

# -- typed outcomes --


@dataclass(frozen=True, slots=True)
class Done:
    facts: dict[str, str] = field(default_factory=dict)  # what to remember, e.g. payment_id
    allocations: tuple[dict[str, Any], ...] = ()  # where inventory allocated the lines
    settled_returns: tuple[str, ...] = ()  # returns restocked and refunded


@dataclass(frozen=True, slots=True)
class Refused:
    """The participant said no for good: the order is compensated and cancelled."""

    reason: CancelReason
    detail: str


@dataclass(frozen=True, slots=True)
class Pending:
    """Under way at the participant (an authorization the PSP decides later): ask again."""

    detail: str


@dataclass(frozen=True, slots=True)
class Failed:
    """No answer worth trusting (timeout, 5xx, unreachable): try again after a backoff."""

    detail: str


Outcome = Done | Refused | Pending | Failed


@dataclass(frozen=True, slots=True)
class SagaOrder:
    """What the steps need to know of an order."""

    order_id: str
    customer_id: str
    reservation_id: str
    payment_method: str
    payment_token: str | None
    total: int
    currency: str
    cancel_reason: str | None
    payment_id: str | None = None
    channel_id: str = ""
    loyalty_points: int = 0
    # What a lifecycle step needs beyond the order row, read before it runs.
    context: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))


Action = Callable[[Participants, SagaOrder], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    reaches: OrderStatus | None  # the order's status once the step is done
    action: Action
    compensation: Action | None  # None: a lifecycle step, retried until it succeeds
    # Whether the order has anything to do at this step, or to undo at its compensation; a
    # step it has not (and that reaches no status) is passed without running its calls.
    needed: Callable[[SagaOrder], bool] = lambda _order: True


def _failed(response: Answer) -> Failed:
    return Failed(f"{response.method} {response.path}: {response.status_code}")


def _problem(response: Answer) -> str:
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        return str(response.status_code)
    return f"{response.status_code} {body.get('title', '')}: {body.get('detail', '')}".strip()


def _transient(response: Answer) -> bool:
    return response.status_code >= 500 or response.status_code in (408, 429)


# -- step 1: the reservation becomes the order's allocations --


async def commit_reservation(participants: Participants, order: SagaOrder) -> Outcome:
    response = await participants.call(
        participants.inventory,
        "POST",
        f"/v1/reservations/{order.reservation_id}/commit",
        body={"order_id": order.order_id},
    )
    if response.status_code == 200:
        return Done(allocations=tuple(response.json()["allocations"]))
    if _transient(response):
        return _failed(response)
    # Expired, released, committed to another order or unknown: the stock is not there.
    return Refused(CancelReason.RESERVATION_NOT_COMMITTABLE, _problem(response))


async def release_stock(participants: Participants, order: SagaOrder) -> Outcome:
    """Release the reservation if it was never committed (so no late commit can land), then
    the order's allocations if it was."""
    released = await participants.call(
        participants.inventory, "DELETE", f"/v1/reservations/{order.reservation_id}"
    )
    # 404/409: gone already, or committed (its allocations are released next).
    if released.status_code not in (204, 404, 409):
        return _failed(released)
    reason = order.cancel_reason or "cancelled"
    cancelled = await participants.call(
        participants.inventory,
        "POST",
        f"/v1/orders/{order.order_id}/cancel",
        body={"reason": reason[:100]},
    )
    if cancelled.status_code != 200:
        return _failed(cancelled)
    return Done()


# -- step 2: the payment, created and authorized --


async def authorize_payment(participants: Participants, order: SagaOrder) -> Outcome:
    """One request creates the payment and asks for its authorization. Sent again with the
    same key, it reports (and drives) what is still pending: asking again is how a pending
    authorization is followed up."""
    created = await participants.call(
        participants.payments,
        "POST",
        "/v1/payments",
        body={**payment_body(order), "authorize": _authorize_body(order)},
        idempotency_key=f"order:{order.order_id}:payment",
    )
    if created.status_code == 409 and _has_payment(created):
        # Created in two requests, by an instance from before the single one.
        return await _authorize_in_two_requests(participants, order)
    if created.status_code != 201:
        return _not_created(created)
    body: dict[str, Any] = created.json()
    payment_id = str(body["payment_id"])
    if "authorization" not in body:
        # A payments service from before the single request created the payment only.
        return await _authorize(participants, order, payment_id)
    return _authorized(payment_id, body["authorization"])


def payment_body(order: SagaOrder) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "customer_id": order.customer_id,
        "method": order.payment_method,
        "amount": order.total,
        "currency": order.currency,
    }


def _authorize_body(order: SagaOrder) -> dict[str, Any]:
    return {"payment_method_token": order.payment_token or ""}


def _not_created(response: Answer) -> Outcome:
    """A payment creation answered otherwise than 201: tried again, or refused for good."""
    if _transient(response):
        return _failed(response)
    return Refused(CancelReason.PAYMENT_REFUSED, _problem(response))


def _has_payment(response: Answer) -> bool:
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        return False
    return any(error.get("field") == "order_id" for error in errors)


async def _authorize_in_two_requests(participants: Participants, order: SagaOrder) -> Outcome:
    created = await participants.call(
        participants.payments,
        "POST",
        "/v1/payments",
        body=payment_body(order),
        idempotency_key=f"order:{order.order_id}:create-payment",
    )
    if created.status_code != 201:
        return _not_created(created)
    return await _authorize(participants, order, str(created.json()["payment_id"]))


async def _authorize(participants: Participants, order: SagaOrder, payment_id: str) -> Outcome:
    answer = await participants.call(
        participants.payments,
        "POST",
        f"/v1/payments/{payment_id}/authorize",
        body=_authorize_body(order),
        idempotency_key=f"order:{order.order_id}:authorize-payment",
    )
    if _transient(answer):
        return _failed(answer)
    if answer.status_code not in (200, 202):
        return Refused(CancelReason.PAYMENT_REFUSED, _problem(answer))
    return _authorized(payment_id, answer.json())


def _authorized(payment_id: str, authorization: dict[str, Any]) -> Outcome:
    outcome = authorization.get("outcome")
    if outcome == "succeeded":
        return Done({"payment_id": payment_id})
    if outcome == "pending":
        return Pending(f"payment {payment_id}: authorization pending")
    operations = authorization.get("operations", [])
    reasons = [op.get("reason") for op in operations if op.get("reason")]
    return Refused(CancelReason.PAYMENT_DECLINED, ", ".join(reasons) or str(outcome))


LIVE_PAYMENT = frozenset({"created", "authorizing", "authorized", "reauthorizing"})
"""Payment statuses that hold (or may soon hold) the customer's money: a payment still
``created`` may have its authorization on the way, so it is voided too (payments then refuses
the late authorization)."""


async def void_payment(participants: Participants, order: SagaOrder) -> Outcome:
    """Void every payment of the order that holds money; one asked while its authorization is
    still under way is carried out by payments once it ends."""
    listed = await participants.call(
        participants.payments, "GET", f"/v1/payments?order_id={order.order_id}"
    )
    if listed.status_code != 200:
        return _failed(listed)
    for payment in listed.json()["payments"]:
        if payment["status"] == "settled":
            # Money was captured: a refund, which belongs to returns, not to this saga yet.
            return Failed(f"payment {payment['payment_id']} is captured: it needs a refund")
        if payment["status"] not in LIVE_PAYMENT:
            continue
        voided = await participants.call(
            participants.payments,
            "POST",
            f"/v1/payments/{payment['payment_id']}/void",
            idempotency_key=f"order:{order.order_id}:void:{payment['payment_id']}",
        )
        if voided.status_code not in (200, 202):
            return _failed(voided)
    return Done()


# -- after delivery: the lifecycle steps --


async def open_trial(participants: Participants, order: SagaOrder) -> Outcome:
    """Payments holds the money for the whole window, renewing the authorization as needed,
    and charges what is still uncaptured if the window closes with nothing settled."""
    ends_at: datetime = order.context["trial_ends_at"]
    answer = await participants.call(
        participants.payments,
        "PUT",
        f"/v1/payments/{order.payment_id}/trial-window",
        body={"ends_at": ends_at.isoformat()},
        idempotency_key=f"order:{order.order_id}:trial-window",
    )
    return Done() if answer.status_code == 200 else _failed(answer)


async def settle_payment(participants: Participants, order: SagaOrder) -> Outcome:
    """Make the payment's net charge the value of the kept lines: capture what is missing,
    refund what was taken beyond it (payments may have charged at the window's end), then
    release the rest of the authorization. Each call's key names the target, so a retry
    repeats the same request and never charges twice."""
    target: int = order.context["kept_value"]
    path = f"/v1/payments/{order.payment_id}"
    read = await participants.call(participants.payments, "GET", path)
    if read.status_code != 200:
        return _failed(read)
    payment: dict[str, Any] = read.json()
    if payment["capture_pending"] or payment["refund_pending"]:
        return Pending(f"payment {order.payment_id}: an operation is under way")
    if payment["status"] in ("authorizing", "reauthorizing"):
        return Pending(f"payment {order.payment_id} is {payment['status']}")
    charged = payment["captured"] - payment["refunded"]
    key = f"order:{order.order_id}:settle:{target}"
    if charged < target:
        answer = await participants.call(
            participants.payments,
            "POST",
            f"{path}/captures",
            body={"amount": target - charged},
            idempotency_key=f"{key}:capture",
        )
    elif charged > target:
        answer = await participants.call(
            participants.payments,
            "POST",
            f"{path}/refunds",
            body={"amount": charged - target},
            idempotency_key=f"{key}:refund",
        )
    elif payment["capturable"] > 0:
        answer = await participants.call(
            participants.payments, "POST", f"{path}/void", idempotency_key=f"{key}:void"
        )
    else:
        return Done()
    if answer.status_code not in (200, 202):
        return _failed(answer)
    # Asked; the next run reads the payment again and goes on from there.
    return Pending(f"payment {order.payment_id}: settling at {target}")


async def process_returns(participants: Participants, order: SagaOrder) -> Outcome:
    """Received returns: each line restocked at the location that received it, then the
    refund of an RMA. Keys name the return, so repeats restock and refund once."""
    settled = []
    for returned in order.context["returns"]:
        return_id = returned["return_id"]
        for line in returned["lines"]:
            restocked = await participants.call(
                participants.inventory,
                "POST",
                "/v1/returns",
                body={
                    "sku": line["sku"],
                    "location_id": returned["location_id"],
                    "quantity": line["quantity"],
                    "sellable": returned["sellable"],
                    "reference": f"return:{return_id}",
                },
                idempotency_key=f"return:{return_id}:{line['sku']}",
            )
            if restocked.status_code != 201:
                return _failed(restocked)
        if returned["refund_amount"] > 0:
            refunded = await participants.call(
                participants.payments,
                "POST",
                f"/v1/payments/{order.payment_id}/refunds",
                body={"amount": returned["refund_amount"]},
                idempotency_key=f"return:{return_id}:refund",
            )
            if refunded.status_code == 202:
                return Pending(f"return {return_id}: refund under way")
            if refunded.status_code != 200:
                return _failed(refunded)
        settled.append(return_id)
    return Done(settled_returns=tuple(settled))


# -- step 3: the loyalty points the customer redeems, held --


async def hold_points(participants: Participants, order: SagaOrder) -> Outcome:
    if order.loyalty_points == 0:
        return Done()
    answer = await participants.call(
        participants.loyalty,
        "POST",
        "/v1/holds",
        body={
            "order_id": order.order_id,
            "customer_id": order.customer_id,
            "channel_id": order.channel_id,
            "points": order.loyalty_points,
        },
        idempotency_key=f"order:{order.order_id}:hold-points",
    )
    if answer.status_code in (200, 201):
        return Done({"points": "held"})
    if _transient(answer):
        return _failed(answer)
    return Refused(CancelReason.POINTS_REFUSED, _problem(answer))


async def release_points(participants: Participants, order: SagaOrder) -> Outcome:
    """Give the points back; with none held yet, loyalty closes the order to a late hold."""
    if order.loyalty_points == 0:
        return Done()
    answer = await participants.call(
        participants.loyalty,
        "POST",
        f"/v1/holds/{order.order_id}/release",
        idempotency_key=f"order:{order.order_id}:release-points",
    )
    return Done({"points": "released"}) if answer.status_code == 200 else _failed(answer)


async def commit_points(participants: Participants, order: SagaOrder) -> Outcome:
    """The order is completed: the held points are spent."""
    answer = await participants.call(
        participants.loyalty,
        "POST",
        f"/v1/holds/{order.order_id}/commit",
        idempotency_key=f"order:{order.order_id}:commit-points",
    )
    return Done({"points": "committed"}) if answer.status_code == 200 else _failed(answer)


STEPS: tuple[Step, ...] = (
    Step("commit_reservation", OrderStatus.ALLOCATED, commit_reservation, release_stock),
    Step("authorize_payment", OrderStatus.AUTHORIZED, authorize_payment, void_payment),
    Step("hold_points", None, hold_points, release_points, lambda o: o.loyalty_points > 0),
)
"""The placement saga, in order; after the last step the order is confirmed. A step that
reaches no status of its own moves the saga on without a version."""
OPEN_TRIAL = Step("open_trial", None, open_trial, None)
SETTLE_PAYMENT = Step("settle_payment", OrderStatus.COMPLETED, settle_payment, None)
PROCESS_RETURNS = Step("process_returns", None, process_returns, None)
COMMIT_POINTS = Step("commit_points", None, commit_points, None)
LIFECYCLE = {
    step.name: step for step in (OPEN_TRIAL, SETTLE_PAYMENT, PROCESS_RETURNS, COMMIT_POINTS)
}
UNDO = "undo:"


def step_named(name: str) -> tuple[int, Step, bool]:
    """(index, step, whether it is the step's compensation) of a stored step name; lifecycle
    steps have index -1."""
    if name in LIFECYCLE:
        return -1, LIFECYCLE[name], False
    compensating = name.startswith(UNDO)
    bare = name.removeprefix(UNDO)
    for index, step in enumerate(STEPS):
        if step.name == bare:
            return index, step, compensating
    raise KeyError(name)


def first_needed(name: str | None, order: SagaOrder) -> str | None:
    """``name``, or the first step after it (the same way: forward or compensating) that the
    order needs; None: none is left."""
    while name is not None:
        index, step, compensating = step_named(name)
        if step.needed(order) or step.reaches is not None:
            return name
        name = next_compensation(index) if compensating else next_forward(index)
    return None


def first_step() -> str:
    return STEPS[0].name


def next_forward(index: int) -> str | None:
    return STEPS[index + 1].name if index + 1 < len(STEPS) else None


def next_compensation(index: int) -> str | None:
    return UNDO + STEPS[index - 1].name if index > 0 else None


def compensation_from(step: str | None) -> str:
    """Where compensation starts for an order at ``step`` (None: past the last step): the
    step under way may have done its work, so it is undone too."""
    if step is None:
        return UNDO + STEPS[-1].name
    index, _, compensating = step_named(step)
    return step if compensating else UNDO + STEPS[index].name
