"""HTTP endpoint for the bulk import of base prices into a price list, streamed: the body is
read as it is applied, so neither side holds the whole file."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel

from omnistock.contracts.identifiers import CHANNEL_PATTERN
from omnistock.platform import imports
from omnistock.platform.auth import Principal, requires
from omnistock.platform.imports import uploads
from omnistock.platform.problems import Problem
from omnistock.pricing import bulk, service

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1", tags=["pricing"])


class PriceImportReportBody(BaseModel):
    """``rows`` = ``applied`` + ``unchanged`` + ``rejected``: an applied row changed a base
    price, an unchanged one was in force already; ``published`` counts the SKUs whose price
    changed now (a later one is published when it comes). ``errors`` holds the first ones by
    line, ``errors_truncated`` says whether there were more."""

    channel_id: str
    rows: int
    applied: int
    unchanged: int
    rejected: int
    published: int
    seconds: float
    errors: list[uploads.RowErrorBody]
    errors_truncated: bool


@router.post(
    "/price-lists/{channel_id}/imports",
    response_model=PriceImportReportBody,
    responses={
        404: {"description": "no such price list"},
        415: {"description": "neither CSV nor JSON lines in UTF-8"},
        422: {"description": "no usable CSV header"},
    },
    openapi_extra=uploads.request_body(
        "CSV with the header sku,price and optionally valid_from, or JSON lines of "
        '{"sku", "price", "valid_from"}; prices in major units of the price list\'s currency '
        "(129.99), valid_from in ISO 8601 with a timezone (the import's start by default)."
    ),
)
async def import_prices(
    channel_id: Annotated[str, Path(pattern=CHANNEL_PATTERN)],
    request: Request,
    principal: Annotated[Principal, requires("pricing:admin")],
) -> dict[str, Any]:
    """Set many base prices from a file. Bad rows are reported with their line numbers and not
    applied; the good ones are. Re-sending the same file changes nothing."""
    fmt = uploads.format_of(request.headers.get("content-type"))
    runtime, clock = request.app.state.runtime, request.app.state.clock
    lines = imports.split_lines(request.stream())
    with uploads.as_problems("price file", channel_id=channel_id, client=principal.subject):
        try:
            report = await bulk.import_prices(runtime.pool, clock, channel_id, lines, fmt)
        except service.NotFound as exc:
            raise Problem(404, "Price list not found", str(exc), type_="not-found") from None
    summary = report.as_dict()
    log.info(
        "prices imported",
        client=principal.subject,
        **{k: v for k, v in summary.items() if k not in {"errors", "errors_truncated"}},
    )
    return summary
