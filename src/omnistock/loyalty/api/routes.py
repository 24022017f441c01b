"""Loyalty over HTTP: holds for the order saga (redeem), accounts and their ledger.

Holds are the saga's: ``loyalty:redeem``, every write under an Idempotency-Key and idempotent
by order id besides. A customer token reads only its own accounts, ledger and holds: another
customer's do not exist for it (404, so ids cannot be probed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel

from omnistock.loyalty import repository, service
from omnistock.loyalty.api.schemas import REFERENCE, HoldIn, MemberPath, OrderPath
from omnistock.loyalty.domain import Hold, InsufficientPoints, InvalidTransition, Policy, Refused
from omnistock.platform import idempotency
from omnistock.platform.auth import CUSTOMER_SCOPE, Principal, requires
from omnistock.platform.clock import Clock
from omnistock.platform.http import FastJSONResponse
from omnistock.platform.problems import Problem, field_problem
from omnistock.platform.runtime import ServiceRuntime

router = APIRouter(prefix="/v1", tags=["loyalty"])
READ, REDEEM = "loyalty:read", "loyalty:redeem"


class State:
    def __init__(self, request: Request) -> None:
        state = request.app.state
        self.runtime: ServiceRuntime = state.runtime
        self.clock: Clock = state.clock
        self.policy: Policy = state.policy


def as_problem(exc: Exception) -> Problem:
    if isinstance(exc, InsufficientPoints):
        return Problem(
            409,
            "Not enough points",
            f"{exc.wanted} points asked for, {exc.available} available",
            type_="insufficient-points",
            errors=[{"field": "points", "message": f"at most {exc.available} available"}],
            available=exc.available,
        )
    if isinstance(exc, service.HoldConflict):
        errors = [{"field": exc.field, "message": exc.message}]
        return Problem(409, "Hold differs", exc.message, type_="conflict", errors=errors)
    if isinstance(exc, InvalidTransition):
        errors = [{"field": "status", "message": f"is {exc.current}"}]
        return Problem(409, "Invalid state", str(exc), type_="invalid-transition", errors=errors)
    if isinstance(exc, service.NotFound):
        return Problem(404, "Not found", str(exc), type_="not-found")
    if isinstance(exc, Refused):
        return field_problem(exc.field, exc.message)
    if isinstance(exc, repository.ConcurrentUpdate | asyncpg.CheckViolationError):
        # The row lock makes this rare; the database's own guard of the balance is the last.
        return Problem(409, "Conflict", "the account changed: try again", type_="conflict")
    raise exc


REFUSALS = (
    InsufficientPoints,
    service.HoldConflict,
    InvalidTransition,
    service.NotFound,
    Refused,
    repository.ConcurrentUpdate,
    asyncpg.CheckViolationError,
)


async def respond_once(
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel | None,
    effect: Callable[[asyncpg.Connection], Awaitable[tuple[int, Any]]],
) -> FastJSONResponse:
    """``effect`` once per Idempotency-Key; a refusal is a problem+json and stores nothing."""
    try:
        return await idempotency.respond_once(
            request, State(request).runtime.pool, principal.subject, key, body, effect
        )
    except REFUSALS as exc:
        raise as_problem(exc) from None


def hold_not_found(order_id: str) -> Problem:
    return Problem(404, "Hold not found", f"no hold for order {order_id}", type_="not-found")


def member_not_found(member_id: str) -> Problem:
    return Problem(404, "Member not found", f"no member {member_id}", type_="not-found")


# -- holds --


@router.post("/holds", status_code=201)
async def place_hold(
    body: HoldIn,
    request: Request,
    principal: Annotated[Principal, requires(REDEEM)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Hold ``points`` of the customer's account (in the channel's brand group and market)
    for an order: they leave the balance now. Once per order: ``201`` when made, ``200`` with
    the hold as it is when the order has one already (asking for other points or another
    member is a 409). A balance short of ``points`` is a 409 naming ``points``."""
    state = State(request)
    hold_request = service.HoldRequest(
        body.order_id, body.customer_id, body.channel_id, body.points
    )

    async def effect(conn: asyncpg.Connection) -> tuple[int, Any]:
        hold, created = await service.place_hold(conn, state.clock, state.policy, hold_request)
        return (201 if created else 200), await hold_view(conn, hold.order_id)

    return await respond_once(request, principal, idempotency_key, body, effect)


@router.post("/holds/{order_id}/commit")
async def commit_hold(
    order_id: OrderPath,
    request: Request,
    principal: Annotated[Principal, requires(REDEEM)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Spend the order's held points. Committed already: the same answer again; released:
    a 409 naming ``status``; no hold: a 404."""
    return await _move(request, principal, idempotency_key, order_id, service.commit_hold)


@router.post("/holds/{order_id}/release")
async def release_hold(
    order_id: OrderPath,
    request: Request,
    principal: Annotated[Principal, requires(REDEEM)],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Give the order's held points back. Released already: the same answer again;
    committed: a 409 naming ``status``. An order with no hold is closed to holds (a
    released hold of no points): a hold asked for later is refused."""
    return await _move(request, principal, idempotency_key, order_id, service.release_hold)


async def _move(
    request: Request,
    principal: Principal,
    key: str | None,
    order_id: str,
    move: Callable[[asyncpg.Connection, Clock, str], Awaitable[Hold]],
) -> FastJSONResponse:
    state = State(request)

    async def effect(conn: asyncpg.Connection) -> tuple[int, Any]:
        hold = await move(conn, state.clock, order_id)
        return 200, await hold_view(conn, hold.order_id)

    return await respond_once(request, principal, key, None, effect)


@router.get("/holds/{order_id}")
async def get_hold(
    order_id: OrderPath,
    request: Request,
    principal: Annotated[Principal, requires(READ, REDEEM, CUSTOMER_SCOPE)],
) -> FastJSONResponse:
    """The order's hold: its member, points and status (a customer: only its own)."""
    async with State(request).runtime.pool.acquire() as conn:
        row = await repository.hold_row(conn, order_id)
    if row is None or not _may_read(principal, row["customer_id"]):
        raise hold_not_found(order_id)
    return FastJSONResponse(_hold(row))


# -- accounts --


@router.get("/members")
async def members_of_customer(
    request: Request,
    principal: Annotated[Principal, requires(READ, CUSTOMER_SCOPE)],
    customer_id: Annotated[str | None, Query(pattern=REFERENCE)] = None,
) -> FastJSONResponse:
    """A customer's accounts, one per brand group and market (a customer: its own, and
    ``customer_id`` may be left out)."""
    wanted = principal.customer_to_list(customer_id, READ, "accounts")
    state = State(request)
    async with state.runtime.pool.acquire() as conn:
        rows = await repository.members_of_customer(conn, wanted)
        members = [await member_view(conn, row, state.clock) for row in rows]
    return FastJSONResponse({"customer_id": wanted, "members": members})


@router.get("/members/{member_id}")
async def get_member(
    member_id: MemberPath,
    request: Request,
    principal: Annotated[Principal, requires(READ, CUSTOMER_SCOPE)],
) -> FastJSONResponse:
    """The account: its balance (what may be spent), held points, tier and the points that
    count towards it (the last 12 months), and its version."""
    state = State(request)
    async with state.runtime.pool.acquire() as conn:
        row = await repository.member_row(conn, member_id)
        if row is None or not _may_read(principal, row["customer_id"]):
            raise member_not_found(member_id)
        view = await member_view(conn, row, state.clock)
    return FastJSONResponse(view)


@router.get("/members/{member_id}/ledger")
async def get_ledger(
    member_id: MemberPath,
    request: Request,
    principal: Annotated[Principal, requires(READ, CUSTOMER_SCOPE)],
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_version: Annotated[int | None, Query(ge=1)] = None,
) -> FastJSONResponse:
    """The account's ledger, newest first: every change of its points (earn, hold, commit,
    release, expire, reverse) with the balance and held points after it. Pages go back with
    ``before_version``."""
    async with State(request).runtime.pool.acquire() as conn:
        row = await repository.member_row(conn, member_id)
        if row is None or not _may_read(principal, row["customer_id"]):
            raise member_not_found(member_id)
        entries = await repository.ledger_of(conn, member_id, limit, before_version)
    return FastJSONResponse({"member_id": member_id, "entries": [_entry(e) for e in entries]})


def _may_read(principal: Principal, customer_id: str | None) -> bool:
    if READ in principal.scopes or REDEEM in principal.scopes:
        return True
    return customer_id is not None and principal.may_act_for(customer_id, READ)


# -- views --


async def hold_view(conn: asyncpg.Connection, order_id: str) -> dict[str, Any]:
    row = await repository.hold_row(conn, order_id)
    assert row is not None, "read in the transaction that wrote it"
    return _hold(row)


def _hold(row: asyncpg.Record) -> dict[str, Any]:
    member = row["member_id"]
    return {
        "order_id": row["order_id"],
        "member_id": str(member) if member else None,
        "customer_id": row["customer_id"],
        "points": row["points"],
        "status": row["status"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


async def member_view(
    conn: asyncpg.Connection, row: asyncpg.Record, clock: Clock
) -> dict[str, Any]:
    member_id = str(row["member_id"])
    expiry = row["next_expiry_at"]
    return {
        "member_id": member_id,
        "customer_id": row["customer_id"],
        "brand_group": row["brand_group"],
        "market": row["market"],
        "tier": row["tier"],
        "qualifying_points": await repository.qualifying_points(conn, member_id, clock.now()),
        "balance": row["balance"],
        "held": row["held"],
        "orders_waiting_to_earn": await repository.orders_waiting_to_earn(conn, member_id),
        "next_expiry_at": expiry.isoformat() if expiry else None,
        "version": row["version"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


def _entry(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "version": row["version"],
        "kind": row["kind"],
        "points": row["points"],
        "balance_change": row["balance_change"],
        "held_change": row["held_change"],
        "balance": row["balance"],
        "held": row["held"],
        "order_id": row["order_id"],
        "details": row["details"],
        "at": row["occurred_at"].isoformat(),
    }
