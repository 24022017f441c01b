"""What every inventory route shares: the router, the state, errors as problems."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from fastapi import APIRouter, Request
from pydantic import BaseModel

from omnistock.inventory import domain, repository, service
from omnistock.inventory.reserving import REFUSALS, CustomerIdRequired
from omnistock.platform import db, idempotency
from omnistock.platform.auth import Principal
from omnistock.platform.clock import Clock
from omnistock.platform.http import FastJSONResponse, on_connection
from omnistock.platform.problems import Problem
from omnistock.platform.runtime import ServiceRuntime

router = APIRouter(prefix="/v1", tags=["inventory"])


def state_of(request: Request) -> tuple[ServiceRuntime, Clock]:
    return request.app.state.runtime, request.app.state.clock


ANSWERED_AS_PROBLEMS = (
    *REFUSALS,
    domain.InvalidTransition,
    asyncpg.CheckViolationError,
    asyncpg.NumericValueOutOfRangeError,
)
"""What a use case refuses with: the client gets a problem+json, and nothing was changed."""


def busy() -> Problem:
    return Problem(
        503,
        "Busy",
        "the SKUs are being changed by others right now: try again",
        type_="busy",
        headers={"Retry-After": "1"},
    )


def as_problem(exc: Exception) -> Problem:
    if isinstance(exc, service.OutOfStock):
        return Problem(
            409,
            "Out of stock",
            str(exc),
            type_="out-of-stock",
            errors=[
                {
                    "field": "lines",
                    "sku": s.sku,
                    "requested": s.requested,
                    "available": s.available,
                    "message": f"{s.requested} requested, {s.available} available",
                }
                for s in exc.shortfalls
            ],
        )
    if isinstance(exc, service.NotFound):
        return Problem(404, f"{exc.what.capitalize()} not found", str(exc), type_="not-found")
    if isinstance(exc, service.CustomerLimitExceeded):
        return Problem(
            409,
            "Limit per customer",
            str(exc),
            type_="customer-limit",
            errors=[
                {"field": "lines", "sku": sku, "message": f"{extra} units over the limit"}
                for sku, extra in exc.excess.items()
            ],
        )
    if isinstance(exc, CustomerIdRequired):
        return Problem(
            422,
            "Invalid request",
            str(exc),
            type_="validation-error",
            errors=[{"field": "customer_id", "message": "required in this channel"}],
        )
    if isinstance(exc, domain.InvalidTransition):
        return Problem(409, "Invalid state", str(exc), type_="invalid-transition")
    if isinstance(exc, asyncpg.NumericValueOutOfRangeError):
        return Problem(
            409,
            "Out of range",
            "the change would take a count past its limit",
            type_="out-of-range",
        )
    if isinstance(exc, asyncpg.CheckViolationError):
        return Problem(
            409,
            "Not enough stock",
            "the change would take stock below what is held or below zero",
            type_="insufficient-stock",
        )
    raise exc


async def in_transaction(
    request: Request, work: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> Any:
    runtime, _ = state_of(request)
    try:
        async with runtime.pool.acquire() as conn:
            return await db.transaction_with_retries(conn, work, (repository.LockContention,))
    except ANSWERED_AS_PROBLEMS as exc:
        raise as_problem(exc) from None
    except repository.LockContention:
        raise busy() from None


async def with_connection(
    request: Request, work: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> Any:
    runtime, _ = state_of(request)
    return await on_connection(runtime.pool, work, ANSWERED_AS_PROBLEMS, as_problem)


async def run_once_per_key(
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel | None,
    work: Callable[[asyncpg.Connection], Awaitable[tuple[int, Any]]],
) -> FastJSONResponse:
    runtime, _ = state_of(request)

    async def attempt() -> FastJSONResponse:
        return await idempotency.respond_once(
            request, runtime.pool, principal.subject, key, body, work
        )

    try:
        # Rolled back whole, the key's answer with it: the loser of a lock race tries again,
        # as a write without a key does (in_transaction).
        return await db.with_retries(attempt, (repository.LockContention,))
    except ANSWERED_AS_PROBLEMS as exc:
        raise as_problem(exc) from None
    except (repository.LockContention, asyncpg.DeadlockDetectedError):
        raise busy() from None


async def run_once_if_keyed(
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel | None,
    work: Callable[[asyncpg.Connection], Awaitable[tuple[int, Any]]],
) -> FastJSONResponse:
    """For writes that are safe to repeat by their nature (release, extend, commit, ship,
    cancel): with an Idempotency-Key, a repeat gets the first answer rather than one computed
    afresh (a second release is then the first's 204, not a 409, and a repeated cancellation
    names the units the first one released); without a key, the write runs as it comes."""
    if key:  # an empty header is no key
        return await run_once_per_key(request, principal, key, body, work)
    status, answer = await in_transaction(request, work)
    return idempotency.answer_response(status, answer)
