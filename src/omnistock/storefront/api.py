"""The storefront HTTP API: ``build_app`` assembles the read model, its feed and the routes.

The routes are declared here, with FastAPI, for their documents (OpenAPI, scopes) and as the
reference path; the lean route in ``lean.py`` answers the same requests before FastAPI sees
them, unless ``OMNISTOCK_STOREFRONT_LEAN_ROUTES=false``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Path, Query, Request, Response
from pydantic import BaseModel, Field

from omnistock.contracts.identifiers import CHANNEL_PATTERN, SKU_PATTERN
from omnistock.platform.auth import Principal, requires
from omnistock.platform.clock import Clock, SystemClock
from omnistock.platform.http import create_app
from omnistock.platform.problems import PROBLEM_JSON
from omnistock.platform.settings import Settings, get_settings
from omnistock.storefront import SERVICE
from omnistock.storefront.feed import Feed
from omnistock.storefront.lean import LeanReads, StorefrontApp
from omnistock.storefront.model import ReadModel, StockStatus
from omnistock.storefront.settings import StorefrontSettings
from omnistock.storefront.views import MAX_BATCH_SKUS, READ_SCOPES, Reads, Reply, shows_quantities

router = APIRouter(prefix="/v1", tags=["storefront"])

ChannelPath = Annotated[str, Path(pattern=CHANNEL_PATTERN)]
SkuPath = Annotated[str, Path(pattern=SKU_PATTERN)]
Reader = Annotated[Principal, requires(*READ_SCOPES)]
IfNoneMatch = Annotated[str | None, Header()]


class Versions(BaseModel):
    availability: int | None = Field(description="of the availability shown; null: none yet")
    price: int | None = Field(description="of the price shown; null: none yet")


class SkuFigures(BaseModel):
    status: StockStatus = Field(
        description="out_of_stock at 0, low_stock up to the channel's threshold"
    )
    available: int | None = Field(
        default=None, description="exact units; only with the storefront:quantities scope"
    )
    price: int | None = Field(description="what the channel charges now, in minor units")
    regular_price: int | None = Field(description="the price without a sale, minor units")
    lowest_price_30d: int | None = Field(
        description="while reduced: the lowest price of the 30 days before (EU Omnibus)"
    )
    currency: str | None = Field(description="ISO 4217")
    reduced: bool
    price_valid_until: str | None = Field(description="when the price changes next, if known")
    versions: Versions


class SkuAnswer(SkuFigures):
    channel: str
    sku: str
    staleness_ms: int = Field(
        description="how far behind the truth this answer may be: since the replica last held "
        "everything of the topic partitions this SKU comes from"
    )


class ListingAnswer(BaseModel):
    channel: str
    skus: dict[str, SkuFigures | None] = Field(description="each SKU asked; null if unknown")
    staleness_ms: int = Field(description="the largest of the SKUs' staleness")


_PROBLEM: dict[str, Any] = {"content": {PROBLEM_JSON: {}}}
_READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    304: {"description": "not modified since the ETag in If-None-Match"},
    404: {"description": "unknown channel or SKU", **_PROBLEM},
}


def as_response(reply: Reply) -> Response:
    response = Response(reply.body, reply.status)
    response.raw_headers = reply.wire_headers()
    return response


@router.get(
    "/channels/{channel}/skus/{sku}",
    response_model=SkuAnswer,
    responses=_READ_RESPONSES,
)
async def get_sku(
    channel: ChannelPath,
    sku: SkuPath,
    request: Request,
    principal: Reader,
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Availability and price of one SKU in one channel, with ETag and Cache-Control."""
    reads: Reads = request.app.state.reads
    quantities = shows_quantities(principal.scopes)
    return as_response(reads.one(channel, sku, quantities, if_none_match, request.url.path))


@router.get(
    "/channels/{channel}/skus",
    response_model=ListingAnswer,
    responses=_READ_RESPONSES,
)
async def get_skus(
    channel: ChannelPath,
    request: Request,
    principal: Reader,
    skus: Annotated[str, Query(description=f"up to {MAX_BATCH_SKUS} SKUs, separated by commas")],
    if_none_match: IfNoneMatch = None,
) -> Response:
    """Availability and price of up to 200 SKUs of one channel: a listing page."""
    reads: Reads = request.app.state.reads
    quantities = shows_quantities(principal.scopes)
    return as_response(reads.many(channel, skus, quantities, if_none_match, request.url.path))


def build_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    *,
    schema: str | None = None,  # the CLI passes one to every service: this one has no database
    own: StorefrontSettings | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    own = own or StorefrontSettings()
    clock = clock or SystemClock()
    model = ReadModel()
    feed = Feed(settings, own, model, clock)
    reads = Reads(model, own, clock)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        feed.start()
        try:
            yield
        finally:
            await asyncio.to_thread(feed.stop)

    async def feed_caught_up() -> str | None:
        return feed.not_ready()

    app = create_app(
        service=SERVICE,
        settings=settings,
        routers=[router],
        lifespan=lifespan,
        readiness={"read model": feed_caught_up},
        app_class=StorefrontApp,
    )
    app.state.reads = reads
    app.state.model = model
    app.state.feed = feed
    if own.lean_routes:
        assert isinstance(app, StorefrontApp)
        app.lean = LeanReads(reads, app.state.token_verifier, SERVICE)
    return app
