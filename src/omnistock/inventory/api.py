"""The inventory HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, FastAPI, Header, Path, Query, Request
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from omnistock.inventory import SERVICE, domain, repository, service
from omnistock.inventory.reserving import REFUSALS, ReservationBatcher, ReserveStock
from omnistock.platform import idempotency
from omnistock.platform.auth import Principal, requires
from omnistock.platform.clock import Clock, SystemClock
from omnistock.platform.http import FastJSONResponse, create_app
from omnistock.platform.problems import Problem
from omnistock.platform.runtime import ServiceRuntime
from omnistock.platform.settings import Settings, get_settings

SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
LOCATION_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
CHANNEL_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
SKU = Annotated[str, Field(pattern=SKU_PATTERN)]
LOCATION = Annotated[str, Field(pattern=LOCATION_PATTERN)]
SkuPath = Annotated[str, Path(pattern=SKU_PATTERN)]
LocationPath = Annotated[str, Path(pattern=LOCATION_PATTERN)]
ChannelPath = Annotated[str, Path(pattern=CHANNEL_PATTERN)]
COUNTRY = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class InventorySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMNISTOCK_INVENTORY_", extra="ignore")

    reservations_per_client_per_s: float = Field(default=200.0, gt=0)
    reservation_burst: int = Field(default=400, ge=1)
    sweep_interval_s: float = Field(default=1.0, gt=0)
    # Concurrent reservation requests share transactions: this many at once, so many per batch.
    reservation_batch_workers: int = Field(default=4, ge=1)
    reservation_batch_max: int = Field(default=64, ge=1)


class Location(BaseModel):
    kind: Literal["warehouse", "store", "supplier"]
    country: COUNTRY
    capabilities: list[Literal["ship", "click_and_collect", "ship_from_store"]] = ["ship"]
    name: str = Field(min_length=1, max_length=200)


class SourcingRule(BaseModel):
    location_id: LOCATION
    priority: int = Field(ge=1)
    safety_stock: int = Field(default=0, ge=0)


class Channel(BaseModel):
    brand: str = Field(min_length=1, max_length=64)
    market: COUNTRY
    sourcing: list[SourcingRule] = Field(min_length=1, max_length=200)
    availability_cap: int | None = Field(default=None, ge=0)
    max_units_per_customer: int | None = Field(default=None, ge=1)


class StockCount(BaseModel):
    on_hand: int = Field(ge=0)
    source: str = Field(min_length=1, max_length=100)
    sequence: int = Field(ge=0)


class StockAdjustment(BaseModel):
    quantity: int = Field(ge=-1_000_000, le=1_000_000)
    reason: Literal["receipt", "store_sale", "damage", "transfer_out", "transfer_in", "correction"]
    reference: str | None = Field(default=None, max_length=200)

    @field_validator("quantity")
    @classmethod
    def not_zero(cls, quantity: int) -> int:
        if quantity == 0:
            raise ValueError("a movement of zero units is no movement")
        return quantity


class ReservationLine(BaseModel):
    sku: SKU
    quantity: int = Field(ge=1, le=10_000)


class ReservationRequest(BaseModel):
    channel_id: str = Field(pattern=CHANNEL_PATTERN)
    lines: list[ReservationLine] = Field(min_length=1, max_length=500)
    ttl_seconds: int = Field(default=900, ge=30, le=7200)
    mode: Literal["all_or_nothing", "per_line"] = "all_or_nothing"
    customer_id: str | None = Field(default=None, max_length=100)
    pickup_location: LOCATION | None = None


class Extension(BaseModel):
    ttl_seconds: int = Field(ge=30, le=7200)


class Commitment(BaseModel):
    order_id: str = Field(min_length=1, max_length=100)


class Shipment(BaseModel):
    shipment_id: str = Field(min_length=1, max_length=100)


class Cancellation(BaseModel):
    reason: str = Field(default="cancelled", min_length=1, max_length=100)


class Return(BaseModel):
    sku: SKU
    location_id: LOCATION
    quantity: int = Field(ge=1)
    sellable: bool = True
    reference: str = Field(min_length=1, max_length=200)


class RateLimiter:
    """A token bucket per client: flash-sale bots get 429 instead of the whole stock."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._rate, self._burst = rate_per_s, burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(client, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - last) * self._rate)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1, now)
        return True


router = APIRouter(prefix="/v1", tags=["inventory"])


def _state(request: Request) -> tuple[ServiceRuntime, Clock]:
    return request.app.state.runtime, request.app.state.clock


def _problem(exc: Exception) -> Problem:
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
    if isinstance(exc, domain.InvalidTransition):
        return Problem(409, "Invalid state", str(exc), type_="invalid-transition")
    if isinstance(exc, asyncpg.CheckViolationError):
        return Problem(
            409,
            "Not enough stock",
            "the change would take stock below what is held or below zero",
            type_="insufficient-stock",
        )
    raise exc


async def _run(request: Request, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    runtime, _ = _state(request)
    try:
        async with runtime.pool.acquire() as conn, conn.transaction():
            return await work(conn)
    except (
        service.OutOfStock,
        service.NotFound,
        service.CustomerLimitExceeded,
        domain.InvalidTransition,
        asyncpg.CheckViolationError,
    ) as exc:
        raise _problem(exc) from None


async def _run_once(
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel | None,
    work: Callable[[asyncpg.Connection], Awaitable[tuple[int, Any]]],
) -> FastJSONResponse:
    runtime, _ = _state(request)
    checked = idempotency.checked_key(key)
    assert checked is not None
    fingerprint = idempotency.request_fingerprint(
        request.method, request.url.path, body.model_dump() if body else None
    )
    try:
        answer = await idempotency.run_once(
            runtime.pool, principal.subject, checked, fingerprint, work
        )
    except (
        service.OutOfStock,
        service.NotFound,
        service.CustomerLimitExceeded,
        domain.InvalidTransition,
        asyncpg.CheckViolationError,
    ) as exc:
        raise _problem(exc) from None
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    return FastJSONResponse(answer.body, status_code=answer.status, headers=headers)


@router.put("/locations/{location_id}")
async def put_location(
    location_id: LocationPath,
    body: Location,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:admin")],
) -> dict[str, str]:
    await _run(
        request,
        lambda conn: service.put_location(
            conn, location_id, body.kind, body.country, body.capabilities, body.name
        ),
    )
    return {"location_id": location_id}


@router.get("/locations")
async def list_locations(
    request: Request,
    _auth: Annotated[Principal, requires("inventory:read", "inventory:admin")],
) -> list[dict[str, Any]]:
    rows = await _run(
        request, lambda conn: conn.fetch("SELECT * FROM locations ORDER BY location_id")
    )
    return [dict(r) for r in rows]


@router.put("/channels/{channel_id}")
async def put_channel(
    channel_id: ChannelPath,
    body: Channel,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:admin")],
) -> dict[str, str]:
    _, clock = _state(request)
    if len({r.priority for r in body.sourcing}) != len(body.sourcing):
        raise Problem(
            422,
            "Invalid request",
            "sourcing: priorities must be distinct",
            type_="validation-error",
            errors=[{"field": "sourcing", "message": "duplicate priority"}],
        )
    sources = [domain.Source(r.location_id, r.priority, r.safety_stock) for r in body.sourcing]
    last: str | None = await _run(
        request,
        lambda conn: service.put_channel(
            conn,
            clock,
            channel_id,
            body.brand,
            body.market,
            sources,
            body.availability_cap,
            body.max_units_per_customer,
        ),
    )
    while last is not None:  # the rest of the catalogue, a slice per transaction
        last = await _run(request, functools.partial(_refresh_slice, clock, channel_id, last))
    return {"channel_id": channel_id}


async def _refresh_slice(
    clock: Clock, channel_id: str, after: str, conn: asyncpg.Connection
) -> str | None:
    return await service.refresh_channel(conn, clock, channel_id, after)


@router.put("/stock/{location_id}/{sku}")
async def count_stock(
    location_id: LocationPath,
    sku: SkuPath,
    body: StockCount,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:write")],
) -> dict[str, Any]:
    """An absolute count; a count with an older or equal sequence from the same source is
    answered ``stale`` and changes nothing."""
    _, clock = _state(request)
    result: service.CountResult = await _run(
        request,
        lambda conn: service.count_stock(
            conn,
            clock,
            source=body.source,
            sequence=body.sequence,
            sku=sku,
            location_id=location_id,
            on_hand=body.on_hand,
        ),
    )
    return {
        "status": result.status,
        "last_sequence": result.last_sequence,
        "on_hand": result.on_hand,
    }


@router.post("/stock/{location_id}/{sku}/adjustments", status_code=201)
async def adjust_stock(
    location_id: LocationPath,
    sku: SkuPath,
    body: StockAdjustment,
    request: Request,
    principal: Annotated[Principal, requires("inventory:write")],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    _, clock = _state(request)

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        on_hand = await service.adjust_stock(
            conn,
            clock,
            sku=sku,
            location_id=location_id,
            quantity=body.quantity,
            reason=body.reason,
            reference=body.reference,
        )
        return 201, {"sku": sku, "location_id": location_id, "on_hand": on_hand}

    return await _run_once(request, principal, idempotency_key, body, work)


@router.get("/stock/{sku}")
async def stock_of(
    sku: SkuPath,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:read")],
) -> dict[str, Any]:
    rows = await _run(
        request,
        lambda conn: conn.fetch(
            """SELECT location_id, on_hand, reserved, allocated FROM stock WHERE sku = $1
           ORDER BY location_id""",
            sku,
        ),
    )
    return {"sku": sku, "locations": [dict(r) for r in rows]}


@router.get("/channels/{channel_id}/availability")
async def availability(
    channel_id: ChannelPath,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:read")],
    skus: Annotated[str, Query(description="comma-separated, at most 500")],
) -> dict[str, Any]:
    wanted = [s for s in skus.split(",") if s]
    if not wanted or len(wanted) > 500:
        raise Problem(
            422,
            "Invalid request",
            "query.skus: between 1 and 500 SKUs",
            type_="validation-error",
            errors=[{"field": "query.skus", "message": "1 to 500 SKUs"}],
        )

    async def work(conn: asyncpg.Connection) -> dict[str, int]:
        channel = await repository.channel(conn, channel_id)
        if channel is None:
            raise service.NotFound("channel", channel_id)
        levels = await repository.levels(conn, wanted, [s.location_id for s in channel.sources])
        return {
            sku: domain.channel_available(sku, channel.sources, levels, channel.availability_cap)
            for sku in wanted
        }

    return {"channel_id": channel_id, "available": await _run(request, work)}


@router.post("/reservations", status_code=201)
async def create_reservation(
    body: ReservationRequest,
    request: Request,
    principal: Annotated[Principal, requires("inventory:reserve")],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    limiter: RateLimiter = request.app.state.rate_limiter
    if not limiter.allow(principal.subject):
        raise Problem(
            429,
            "Too many reservations",
            "slow down: this client's reservation rate is limited",
            type_="rate-limited",
            headers={"Retry-After": "1"},
        )

    key = idempotency.checked_key(idempotency_key)
    assert key is not None
    command = ReserveStock(
        channel_id=body.channel_id,
        lines=tuple((line.sku, line.quantity) for line in body.lines),
        client_id=principal.subject,
        customer_id=body.customer_id,
        ttl=timedelta(seconds=body.ttl_seconds),
        all_or_nothing=body.mode == "all_or_nothing",
        pickup_location=body.pickup_location,
    )
    fingerprint = idempotency.request_fingerprint("POST", "/v1/reservations", body.model_dump())
    batcher: ReservationBatcher = request.app.state.batcher
    try:
        answer = await batcher.submit(command, principal.subject, key, fingerprint)
    except REFUSALS as exc:
        raise _problem(exc) from None
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    return FastJSONResponse(answer.body, status_code=answer.status, headers=headers)


@router.get("/reservations/{reservation_id}")
async def get_reservation(
    reservation_id: str,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:reserve", "inventory:read")],
) -> dict[str, Any]:
    found = await _run(request, lambda conn: repository.reservation(conn, _uuid(reservation_id)))
    if found is None:
        raise Problem(
            404, "Reservation not found", f"no reservation {reservation_id}", type_="not-found"
        )
    row, lines = found
    return {
        "reservation_id": reservation_id,
        "channel_id": row["channel_id"],
        "status": row["status"],
        "expires_at": row["expires_at"].isoformat(),
        "order_id": row["order_id"],
        "lines": [dict(line) for line in lines],
    }


def _uuid(value: str) -> str:
    import uuid

    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise Problem(
            422,
            "Invalid request",
            "path.reservation_id: not a UUID",
            type_="validation-error",
            errors=[{"field": "path.reservation_id", "message": "not a UUID"}],
        ) from None


@router.post("/reservations/{reservation_id}/extend")
async def extend_reservation(
    reservation_id: str,
    body: Extension,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:reserve")],
) -> dict[str, Any]:
    _, clock = _state(request)
    result: dict[str, Any] = await _run(
        request,
        lambda conn: service.extend(
            conn, clock, _uuid(reservation_id), timedelta(seconds=body.ttl_seconds)
        ),
    )
    return result


@router.delete("/reservations/{reservation_id}", status_code=204)
async def release_reservation(
    reservation_id: str,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:reserve")],
) -> None:
    _, clock = _state(request)
    await _run(request, lambda conn: service.release(conn, clock, _uuid(reservation_id)))


@router.post("/reservations/{reservation_id}/commit")
async def commit_reservation(
    reservation_id: str,
    body: Commitment,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:allocate")],
) -> dict[str, Any]:
    _, clock = _state(request)
    allocations = await _run(
        request, lambda conn: service.commit(conn, clock, _uuid(reservation_id), body.order_id)
    )
    return {"order_id": body.order_id, "allocations": allocations}


@router.post("/orders/{order_id}/allocations/{allocation_id}/ship")
async def ship_allocation(
    order_id: str,
    allocation_id: str,
    body: Shipment,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:fulfil")],
) -> dict[str, str]:
    _, clock = _state(request)
    await _run(
        request,
        lambda conn: service.ship(conn, clock, order_id, _uuid(allocation_id), body.shipment_id),
    )
    return {"order_id": order_id, "allocation_id": allocation_id, "status": "shipped"}


@router.post("/orders/{order_id}/cancel")
async def cancel_order_allocations(
    order_id: str,
    body: Cancellation,
    request: Request,
    _auth: Annotated[Principal, requires("inventory:allocate")],
) -> dict[str, Any]:
    _, clock = _state(request)
    released = await _run(
        request, lambda conn: service.cancel_allocations(conn, clock, order_id, body.reason)
    )
    return {"order_id": order_id, "released": released}


@router.post("/returns", status_code=201)
async def restock_return(
    body: Return,
    request: Request,
    principal: Annotated[Principal, requires("inventory:write")],
    idempotency_key: Annotated[str | None, Header()] = None,
) -> FastJSONResponse:
    _, clock = _state(request)

    async def work(conn: asyncpg.Connection) -> tuple[int, Any]:
        await service.restock_return(
            conn,
            clock,
            sku=body.sku,
            location_id=body.location_id,
            quantity=body.quantity,
            sellable=body.sellable,
            reference=body.reference,
        )
        return 201, body.model_dump()

    return await _run_once(request, principal, idempotency_key, body, work)


def sweeper(
    interval_s: float, clock: Clock
) -> Callable[[ServiceRuntime, asyncio.Event], Awaitable[None]]:
    """Expires reservations past their TTL. Its state is the reservations table, so a restart
    picks up exactly where it left off; several replicas sweeping at once are safe."""

    async def sweep(runtime: ServiceRuntime, stop: asyncio.Event) -> None:
        while not stop.is_set():
            async with runtime.pool.acquire() as conn, conn.transaction():
                expired = await service.expire_due(conn, clock)
            if expired == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)

    return sweep


def build_app(
    settings: Settings | None = None, clock: Clock | None = None, *, schema: str | None = None
) -> FastAPI:
    from omnistock.inventory import bulk_api

    settings = settings or get_settings()
    own = InventorySettings()
    clock = clock or SystemClock()
    runtime = ServiceRuntime(
        SERVICE, settings, schema=schema, jobs=[sweeper(own.sweep_interval_s, clock)]
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with runtime.lifespan():
            batcher = ReservationBatcher(
                runtime.pool, clock, own.reservation_batch_workers, own.reservation_batch_max
            )
            app.state.batcher = batcher
            batcher.start()
            try:
                yield
            finally:
                await batcher.stop()

    app = create_app(
        service=SERVICE,
        settings=settings,
        routers=[router, bulk_api.router],
        lifespan=lifespan,
        readiness=runtime.readiness(),
    )
    app.state.runtime = runtime
    app.state.clock = clock
    app.state.rate_limiter = RateLimiter(own.reservations_per_client_per_s, own.reservation_burst)
    return app
