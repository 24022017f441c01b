"""HTTP endpoint for the bulk import of a full stock snapshot, streamed: the body is read as it
is applied, so neither side holds the whole file."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from omnistock.inventory import bulk
from omnistock.platform import imports
from omnistock.platform.auth import Principal, requires
from omnistock.platform.imports import uploads
from omnistock.platform.problems import field_problem

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1", tags=["inventory"])

CLOCK_SKEW = timedelta(minutes=1)
"""How far ahead of ours a sender's clock may be: an ``as_of`` up to this far in the future is
taken as now."""


class ImportReportBody(BaseModel):
    """``rows`` = ``applied`` + ``unchanged`` + ``stale`` + ``rejected``; ``stale``: items
    counted again after ``as_of``, left as they are; ``errors`` holds the first ones by line,
    ``errors_truncated`` says whether there were more."""

    import_id: str
    source: str
    as_of: datetime | None
    rows: int
    applied: int
    unchanged: int
    stale: int
    rejected: int
    shortages: int
    seconds: float
    errors: list[uploads.RowErrorBody]
    errors_truncated: bool


@router.post(
    "/stock/bulk",
    response_model=ImportReportBody,
    responses={
        415: {"description": "neither CSV nor JSON lines in UTF-8"},
        422: {"description": "no usable CSV header, or no source"},
    },
    openapi_extra=uploads.request_body(
        "CSV with the header sku,location_id,on_hand, or JSON lines of "
        '{"sku", "location_id", "on_hand"}; absolute counts.'
    ),
)
async def import_snapshot(
    request: Request,
    principal: Annotated[Principal, requires("inventory:write")],
    source: Annotated[
        str, Query(min_length=1, max_length=100, description="the system the snapshot is from")
    ],
    as_of: Annotated[
        datetime | None,
        Query(
            description="when the snapshot was counted, with its offset: what moved each item "
            "since is kept on top of the count, and an item counted again since is left alone "
            "(stale). By default the snapshot is a count as of now."
        ),
    ] = None,
) -> dict[str, Any]:
    """Apply a full stock snapshot. Bad rows are reported with their line numbers and not
    applied; the good ones are. Re-sending the same snapshot changes nothing."""
    fmt = uploads.format_of(request.headers.get("content-type"))
    runtime, clock = request.app.state.runtime, request.app.state.clock
    if as_of is not None:
        if as_of.utcoffset() is None:
            raise field_problem("query.as_of", "needs a UTC offset (e.g. 2026-03-02T03:00:00Z)")
        now = clock.now()
        if as_of > now + CLOCK_SKEW:
            raise field_problem("query.as_of", "is in the future")
        as_of = min(as_of, now)  # the sender's clock a little ahead of ours
    lines = imports.split_lines(request.stream())
    with uploads.as_problems("snapshot", source=source, client=principal.subject):
        report = await bulk.import_snapshot(runtime.pool, clock, lines, fmt, source, as_of=as_of)
    summary = report.as_dict()
    log.info(
        "snapshot imported",
        client=principal.subject,
        **{k: v for k, v in summary.items() if k not in {"errors", "errors_truncated"}},
    )
    return summary
