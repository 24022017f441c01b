"""Payment intents and their operations over HTTP.

A write that involves the PSP runs in three steps: its operations are recorded (once per
Idempotency-Key, in the transaction that stores the key), then sent to the PSP with no
transaction open, then the answer recorded. The reply says how it went: ``succeeded``,
``declined``/``failed`` (the PSP refused; 200 either way, a typed outcome rather than an error),
or ``pending`` with 202 when the PSP's answer is not known yet: the events, a GET, or the same
request sent again under the same key tell the end of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel

from omnistock.payments import repository, service
from omnistock.payments.api.schemas import (
    REFERENCE_PATTERN,
    AmountIn,
    AuthorizeIn,
    PaymentIn,
    PaymentPath,
    TrialWindowIn,
)
from omnistock.payments.domain import InvalidTransition, Operation, Payment, PaymentRefused
from omnistock.payments.driver import Driver
from omnistock.platform import idempotency
from omnistock.platform.auth import CUSTOMER_SCOPE, Principal, requires
from omnistock.platform.clock import Clock
from omnistock.platform.http import FastJSONResponse
from omnistock.platform.problems import Problem
from omnistock.platform.runtime import ServiceRuntime

router = APIRouter(prefix="/v1", tags=["payments"])
WRITE, READ = "payments:write", "payments:read"

REFUSALS = (
    PaymentRefused,
    InvalidTransition,
    service.NotFound,
    service.OrderHasPayment,
    asyncpg.CheckViolationError,
)


def as_problem(exc: Exception) -> Problem:
    if isinstance(exc, PaymentRefused):
        error = {"field": exc.field, "message": exc.message}
        return Problem(422, "Invalid request", str(exc), type_="validation-error", errors=[error])
    if isinstance(exc, service.NotFound):
        return Problem(404, "Payment not found", str(exc), type_="not-found")
    if isinstance(exc, service.OrderHasPayment):
        error = {"field": "order_id", "message": "has a payment in play"}
        return Problem(409, "Order has a payment", str(exc), type_="conflict", errors=[error])
    if isinstance(exc, InvalidTransition):
        error = {"field": "status", "message": f"is {exc.status}"}
        return Problem(409, "Invalid state", str(exc), type_="invalid-transition", errors=[error])
    if isinstance(exc, asyncpg.CheckViolationError):
        # The database's own guard of the money rules: the payment changed under the request.
        return Problem(409, "Conflict", "the payment changed: try again", type_="conflict")
    raise exc


def state_of(request: Request) -> tuple[ServiceRuntime, Clock, Driver]:
    state = request.app.state
    return state.runtime, state.clock, state.driver


def timing_of(request: Request) -> service.Timing:
    timing: service.Timing = request.app.state.timing
    return timing


@router.post("/payments", status_code=201)
async def create_payment(
    body: PaymentIn,
    request: Request,
    principal: Annotated[Principal, requires(WRITE)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Create the payment intent of an order; nothing is asked of the PSP yet. With
    ``authorize``, its authorization is asked for in the same request, as ``POST
    /v1/payments/{id}/authorize`` would: the 201 carries the payment as it is then and an
    ``authorization`` with the outcome (``pending`` until the PSP decides); the same request sent
    again under the same key drives a pending authorization again."""
    _, clock, _ = state_of(request)
    token = body.authorize.payment_method_token if body.authorize else None

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        payment, operation_ids = await service.create_payment(
            conn,
            clock,
            timing_of(request),
            order_id=body.order_id,
            customer_id=body.customer_id,
            method=body.method,
            currency=body.currency,
            amount=body.amount,
            authorize_with=token,
        )
        if token is None:
            return 201, await payment_view(conn, payment.payment_id)
        return 201, {"payment_id": payment.payment_id, "operation_ids": operation_ids}

    if token is None:
        return await respond_once(request, principal, idempotency_key, body, work)
    answer, headers = await _recorded_then_driven(request, principal, idempotency_key, body, work)
    authorization = {"outcome": answer["outcome"], "operations": answer["operations"]}
    return FastJSONResponse(
        {**answer["payment"], "authorization": authorization}, status_code=201, headers=headers
    )


@router.post("/payments/{payment_id}/authorize")
async def authorize(
    payment_id: PaymentPath,
    body: AuthorizeIn,
    request: Request,
    principal: Annotated[Principal, requires(WRITE)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Authorize the payment's amount (for pay later and try before you buy: ask the PSP to
    approve the deferred payment)."""

    def action(payment: Payment, now: Any) -> list[Operation]:
        return [payment.request_authorization(repository.new_id(), body.payment_method_token, now)]

    return await operate(request, principal, idempotency_key, body, payment_id, action)


@router.post("/payments/{payment_id}/captures")
async def capture(
    payment_id: PaymentPath,
    body: AmountIn,
    request: Request,
    principal: Annotated[Principal, requires(WRITE)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Charge part or all of what is authorized; several captures may follow one another, and
    together they never exceed the authorization."""

    def action(payment: Payment, now: Any) -> list[Operation]:
        return [payment.request_capture(repository.new_id(), body.amount, now)]

    return await operate(request, principal, idempotency_key, body, payment_id, action)


@router.post("/payments/{payment_id}/void")
async def void(
    payment_id: PaymentPath,
    request: Request,
    principal: Annotated[Principal, requires(WRITE)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Release what is authorized and not captured. Asked while an authorization or captures
    are under way, it is carried out once they end (202, ``scheduled``)."""

    def action(payment: Payment, now: Any) -> list[Operation]:
        operation = payment.request_void(repository.new_id(), now)
        return [operation] if operation else []

    return await operate(request, principal, idempotency_key, None, payment_id, action)


@router.post("/payments/{payment_id}/refunds")
async def refund(
    payment_id: PaymentPath,
    body: AmountIn,
    request: Request,
    principal: Annotated[Principal, requires(WRITE)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Give back part of what was captured; refunds together never exceed the captures."""
    _, clock, _ = state_of(request)

    async def start(conn: asyncpg.Connection) -> list[str]:
        return await service.refund(conn, clock, timing_of(request), payment_id, body.amount)

    return await operate_with(request, principal, idempotency_key, body, payment_id, start)


@router.post("/payments/{payment_id}/reauthorize")
async def reauthorize(
    payment_id: PaymentPath,
    request: Request,
    principal: Annotated[Principal, requires(WRITE)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Replace the authorization with a new one for what is still to capture, before it lapses
    (the service does so by itself for try before you buy)."""

    def action(payment: Payment, now: Any) -> list[Operation]:
        return [payment.request_reauthorization(repository.new_id(), now)]

    return await operate(request, principal, idempotency_key, None, payment_id, action)


@router.put("/payments/{payment_id}/trial-window")
async def set_trial_window(
    payment_id: PaymentPath,
    body: TrialWindowIn,
    request: Request,
    principal: Annotated[Principal, requires(WRITE)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Try before you buy: hold the payment until ``ends_at`` (renewing the authorization as
    often as needed), then charge what is still uncaptured."""
    _, clock, _ = state_of(request)

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        await service.set_trial_window(conn, clock, timing_of(request), payment_id, body.ends_at)
        return 200, await payment_view(conn, payment_id)

    return await respond_once(request, principal, idempotency_key, body, work)


@router.get("/payments/{payment_id}")
async def get_payment(
    payment_id: PaymentPath,
    request: Request,
    principal: Annotated[Principal, requires(READ, CUSTOMER_SCOPE)],
) -> FastJSONResponse:
    """The payment, its operations and its history (every version). A customer sees only its
    own payments."""
    runtime, _, _ = state_of(request)
    async with runtime.pool.acquire() as conn:
        row = await repository.payment_row(conn, payment_id)
        if row is None or not principal.may_act_for(row["customer_id"], READ):
            raise as_problem(service.NotFound(payment_id))
        view = _payment(row)
        view["operations"] = [
            _operation(op) for op in await repository.operations_of(conn, payment_id)
        ]
        view["history"] = [
            {
                "version": h["version"],
                "at": h["occurred_at"].isoformat(),
                "type": h["type"],
                "data": h["data"],
            }
            for h in await repository.history_of(conn, payment_id)
        ]
    return FastJSONResponse(view)


@router.get("/payments")
async def payments_of_order(
    request: Request,
    principal: Annotated[Principal, requires(READ, CUSTOMER_SCOPE)],
    order_id: Annotated[str, Query(pattern=REFERENCE_PATTERN)],
) -> FastJSONResponse:
    """The payments of an order, oldest first (a customer: only its own)."""
    runtime, _, _ = state_of(request)
    customer = None if READ in principal.scopes else principal.subject
    async with runtime.pool.acquire() as conn:
        rows = await repository.payments_of_order(conn, order_id, customer)
    return FastJSONResponse({"order_id": order_id, "payments": [_payment(r) for r in rows]})


# -- the three steps --


async def respond_once(
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel,
    work: Callable[[asyncpg.Connection], Awaitable[tuple[int, Any]]],
) -> FastJSONResponse:
    """``work`` once per Idempotency-Key; a refusal is a problem+json and stores nothing."""
    runtime, _, _ = state_of(request)
    try:
        return await idempotency.respond_once(
            request, runtime.pool, principal.subject, key, body, work
        )
    except REFUSALS as exc:
        raise as_problem(exc) from None


async def operate(
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel | None,
    payment_id: str,
    action: service.Action,
) -> FastJSONResponse:
    _, clock, _ = state_of(request)

    async def start(conn: asyncpg.Connection) -> list[str]:
        return await service.start(conn, clock, timing_of(request), payment_id, action)

    return await operate_with(request, principal, key, body, payment_id, start)


async def operate_with(
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel | None,
    payment_id: str,
    start: Callable[[asyncpg.Connection], Awaitable[list[str]]],
) -> FastJSONResponse:
    async def record(conn: asyncpg.Connection) -> tuple[int, Any]:
        return 202, {"payment_id": payment_id, "operation_ids": await start(conn)}

    answer, headers = await _recorded_then_driven(request, principal, key, body, record)
    status = 202 if answer["outcome"] in ("pending", "scheduled") else 200
    return FastJSONResponse(answer, status_code=status, headers=headers)


async def _recorded_then_driven(
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel | None,
    record: Callable[[asyncpg.Connection], Awaitable[tuple[int, Any]]],
) -> tuple[dict[str, Any], dict[str, str]]:
    """``record`` once per Idempotency-Key (its answer names the payment and the operations
    it recorded), then those operations still pending sent to the PSP: the answer as it then
    is, and the headers of a replay."""
    runtime, _, driver = state_of(request)
    checked = idempotency.checked_key(key)
    assert checked is not None
    fingerprint = idempotency.request_fingerprint(
        request.method, request.url.path, body.model_dump(mode="json") if body else None
    )
    try:
        stored = await idempotency.run_once(
            runtime.pool, principal.subject, checked, fingerprint, record
        )
    except REFUSALS as exc:
        raise as_problem(exc) from None
    payment_id: str = stored.body["payment_id"]
    operation_ids: list[str] = stored.body["operation_ids"]
    # A repeated request drives what is still pending again, under the same PSP keys.
    await driver.drive(runtime.pool, operation_ids)
    async with runtime.pool.acquire() as conn:
        answer = await operation_answer(conn, payment_id, operation_ids)
    return answer, {"Idempotent-Replayed": "true"} if stored.replayed else {}


# -- views --


async def payment_view(conn: asyncpg.Connection, payment_id: str) -> dict[str, Any]:
    row = await repository.payment_row(conn, payment_id)
    if row is None:
        raise service.NotFound(payment_id)
    return _payment(row)


async def operation_answer(
    conn: asyncpg.Connection, payment_id: str, operation_ids: list[str]
) -> dict[str, Any]:
    payment = await payment_view(conn, payment_id)
    operations = [
        _operation(r) for r in await repository.operations_of(conn, payment_id, operation_ids)
    ]
    statuses = {op["status"] for op in operations}
    if "pending" in statuses:
        outcome = "pending"
    elif "failed" in statuses:
        outcome = "declined" if operations[0]["kind"] == "authorize" else "failed"
    elif operations or payment["void_requested"] is None:
        outcome = "succeeded"
    else:
        outcome = "scheduled"
    return {"outcome": outcome, "operations": operations, "payment": payment}


def _payment(row: asyncpg.Record) -> dict[str, Any]:
    def instant(name: str) -> str | None:
        value = row[name]
        return value.isoformat() if value else None

    capturable = row["authorized"] - row["captured"] - row["capture_pending"] - row["released"]
    return {
        "payment_id": str(row["payment_id"]),
        "order_id": row["order_id"],
        "customer_id": row["customer_id"],
        "method": row["method"],
        "status": row["status"],
        "version": row["version"],
        "currency": row["currency"],
        "amount": row["amount"],
        "authorized": row["authorized"],
        "captured": row["captured"],
        "capturable": capturable if row["status"] == "authorized" else 0,
        "refunded": row["refunded"],
        "refundable": row["captured"] - row["refunded"] - row["refund_pending"],
        "released": row["released"],
        "capture_pending": row["capture_pending"],
        "refund_pending": row["refund_pending"],
        "authorization_expires_at": instant("authorization_expires_at"),
        "trial_ends_at": instant("trial_ends_at"),
        "void_requested": str(row["void_requested"]) if row["void_requested"] else None,
        "created_at": instant("created_at"),
        "updated_at": instant("updated_at"),
    }


def _operation(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "operation_id": str(row["operation_id"]),
        "kind": row["kind"],
        "amount": row["amount"],
        "trigger": row["trigger"],
        "status": row["status"],
        "reason": row["failure_reason"],
        "attempts": row["attempts"],
        "requested_at": row["requested_at"].isoformat(),
        "resolved_at": row["resolved_at"].isoformat() if row["resolved_at"] else None,
    }
