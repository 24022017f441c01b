"""Price lists, base prices, scheduled sales, quotes and history."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from fastapi import APIRouter, Header, Query, Request
from pydantic import AwareDatetime, BaseModel

from omnistock.platform import idempotency
from omnistock.platform.auth import Principal, requires
from omnistock.platform.clock import Clock
from omnistock.platform.http import FastJSONResponse, on_connection
from omnistock.platform.problems import Problem, field_problem
from omnistock.platform.runtime import ServiceRuntime
from omnistock.pricing import service
from omnistock.pricing.api.schemas import (
    BasePrices,
    ChannelPath,
    PriceList,
    QuoteRequest,
    SaleIn,
    SkuPath,
)
from omnistock.pricing.domain import PricingError, Quote

router = APIRouter(prefix="/v1", tags=["pricing"])

REFUSALS = (PricingError, service.NotFound, service.PriceListInUse, service.SaleOver)


def as_problem(exc: Exception) -> Problem:
    if isinstance(exc, PricingError):
        error: dict[str, Any] = {"field": exc.field, "message": exc.message}
        if exc.sku is not None:
            error["sku"] = exc.sku
        return Problem(422, "Invalid request", str(exc), type_="validation-error", errors=[error])
    if isinstance(exc, service.NotFound):
        return Problem(404, f"{exc.what.capitalize()} not found", str(exc), type_="not-found")
    if isinstance(exc, service.SaleOver):
        return Problem(409, "Sale over", str(exc), type_="sale-over")
    if isinstance(exc, service.PriceListInUse):
        return Problem(
            409,
            "Price list in use",
            str(exc),
            type_="price-list-in-use",
            errors=[{"field": "currency", "message": "differs from the prices already set"}],
        )
    raise exc


def state_of(request: Request) -> tuple[ServiceRuntime, Clock]:
    return request.app.state.runtime, request.app.state.clock


async def in_transaction(
    request: Request, work: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> Any:
    runtime, _ = state_of(request)
    try:
        async with runtime.pool.acquire() as conn, conn.transaction():
            return await work(conn)
    except REFUSALS as exc:
        raise as_problem(exc) from None


async def with_connection(
    request: Request, work: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> Any:
    runtime, _ = state_of(request)
    return await on_connection(runtime.pool, work, REFUSALS, as_problem)


async def once_per_key(
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel,
    work: Callable[[asyncpg.Connection], Awaitable[tuple[int, Any]]],
) -> FastJSONResponse:
    """``work`` once per Idempotency-Key: a repeat gets the first answer and changes nothing."""
    runtime, _ = state_of(request)
    try:
        return await idempotency.respond_once(
            request, runtime.pool, principal.subject, key, body, work
        )
    except REFUSALS as exc:
        raise as_problem(exc) from None


def quote_body(quote: Quote | None, currency: str) -> dict[str, Any] | None:
    if quote is None:
        return None
    return {
        "effective": quote.effective,
        "regular": quote.regular,
        "reduced": quote.reduced,
        "lowest_price_30d": quote.lowest_30d,
        "currency": currency,
        "valid_until": quote.valid_until.isoformat() if quote.valid_until else None,
    }


@router.put("/price-lists/{channel_id}")
async def put_price_list(
    channel_id: ChannelPath,
    body: PriceList,
    request: Request,
    _auth: Annotated[Principal, requires("pricing:admin")],
) -> dict[str, Any]:
    """Create or change a channel's price list: its currency and the VAT rate its prices
    include. The currency cannot change once prices are set in it."""
    result: dict[str, Any] = await in_transaction(
        request,
        lambda conn: service.put_price_list(
            conn, channel_id, body.currency, body.vat_rate_basis_points
        ),
    )
    return result


@router.get("/price-lists/{channel_id}")
async def get_price_list(
    channel_id: ChannelPath,
    request: Request,
    _auth: Annotated[Principal, requires("pricing:read", "pricing:admin")],
) -> dict[str, Any]:
    result: dict[str, Any] = await in_transaction(
        request, lambda conn: service.price_list(conn, channel_id)
    )
    return result


@router.post("/price-lists/{channel_id}/prices")
async def set_base_prices(
    channel_id: ChannelPath,
    body: BasePrices,
    request: Request,
    principal: Annotated[Principal, requires("pricing:write")],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Upsert regular prices, each from its ``valid_from`` (now by default); all or none.
    Answers with each SKU's price now."""
    _, clock = state_of(request)
    seen: dict[tuple[str, datetime | None], int] = {}
    for i, price in enumerate(body.prices):
        if (price.sku, price.valid_from) in seen:
            raise field_problem(
                f"prices[{i}].sku", f"repeats prices[{seen[price.sku, price.valid_from]}]"
            )
        seen[price.sku, price.valid_from] = i
    prices = [service.NewBasePrice(p.sku, p.amount, p.valid_from) for p in body.prices]

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        now = await service.set_base_prices(conn, clock, channel_id, prices)
        currency = await service.currency_of(conn, channel_id)
        return 200, {
            "channel_id": channel_id,
            "prices": {
                sku: quote_body(now.get(sku), currency)
                for sku in dict.fromkeys(p.sku for p in prices)
            },
        }

    return await once_per_key(request, principal, idempotency_key, body, work)


@router.post("/price-lists/{channel_id}/sales", status_code=201)
async def schedule_sale(
    channel_id: ChannelPath,
    body: SaleIn,
    request: Request,
    principal: Annotated[Principal, requires("pricing:write")],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    """Schedule a reduced price for each line's SKU within [starts_at, ends_at); all lines or
    none. A sale overlapping another of the same SKU is refused, naming the SKU."""
    _, clock = state_of(request)
    lines = [service.SaleLine(line.sku, line.amount) for line in body.lines]

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        ids = await service.schedule_sales(
            conn, clock, channel_id, body.starts_at, body.ends_at, lines
        )
        return 201, {
            "channel_id": channel_id,
            "starts_at": body.starts_at.isoformat(),
            "ends_at": body.ends_at.isoformat(),
            "sales": [{"sku": sku, "sale_id": sale_id} for sku, sale_id in ids.items()],
        }

    return await once_per_key(request, principal, idempotency_key, body, work)


@router.delete("/price-lists/{channel_id}/sales/{sale_id}")
async def cancel_sale(
    channel_id: ChannelPath,
    sale_id: uuid.UUID,
    request: Request,
    _auth: Annotated[Principal, requires("pricing:write")],
) -> dict[str, Any]:
    """Call a sale off: one yet to start never applies; a running one ends now, its price
    published at once, and stays in the history (it counts for the 30-day lowest price)."""
    _, clock = state_of(request)
    result: dict[str, Any] = await in_transaction(
        request, lambda conn: service.cancel_sale(conn, clock, channel_id, str(sale_id))
    )
    return result


@router.post("/price-lists/{channel_id}/quotes")
async def quotes(
    channel_id: ChannelPath,
    body: QuoteRequest,
    request: Request,
    _auth: Annotated[Principal, requires("pricing:read")],
) -> FastJSONResponse:
    """The price of up to 500 SKUs at one instant (now by default; past or future alike);
    null for a SKU without a price then."""
    _, clock = state_of(request)
    at = body.at or clock.now()
    currency, found = await with_connection(
        request, lambda conn: service.quotes(conn, channel_id, body.skus, at)
    )
    return FastJSONResponse(
        {
            "channel_id": channel_id,
            "at": at.isoformat(),
            "prices": {sku: quote_body(quote, currency) for sku, quote in found.items()},
        }
    )


@router.get("/price-lists/{channel_id}/skus/{sku}")
async def quote(
    channel_id: ChannelPath,
    sku: SkuPath,
    request: Request,
    _auth: Annotated[Principal, requires("pricing:read")],
    at: Annotated[AwareDatetime | None, Query(description="now, when left out")] = None,
) -> dict[str, Any]:
    """One SKU's price at an instant."""
    _, clock = state_of(request)
    moment = at or clock.now()
    currency, found = await with_connection(
        request, lambda conn: service.quotes(conn, channel_id, [sku], moment)
    )
    body = quote_body(found[sku], currency)
    if body is None:
        raise Problem(
            404,
            "Price not found",
            f"{sku!r} has no price in {channel_id!r} then",
            type_="not-found",
        )
    return {"channel_id": channel_id, "sku": sku, "at": moment.isoformat(), **body}


@router.get("/price-lists/{channel_id}/skus/{sku}/history")
async def history(
    channel_id: ChannelPath,
    sku: SkuPath,
    request: Request,
    _auth: Annotated[Principal, requires("pricing:read")],
) -> FastJSONResponse:
    """Every base price and sale of the SKU as recorded (nothing is ever overwritten but a
    base price set again for the same instant), and what is published now."""
    found: dict[str, Any] = await in_transaction(
        request, lambda conn: service.history(conn, channel_id, sku)
    )
    return FastJSONResponse({"channel_id": channel_id, "sku": sku, **found})
