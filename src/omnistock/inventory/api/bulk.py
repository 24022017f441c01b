"""HTTP endpoint for the bulk import of a full stock snapshot, streamed: the body is read as it
is applied, so neither side holds the whole file."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from omnistock.inventory import bulk, snapshot
from omnistock.platform.auth import Principal, requires
from omnistock.platform.problems import Problem

log = structlog.get_logger(__name__)

MEDIA_TYPES: dict[str, snapshot.Format] = {
    "text/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
}

router = APIRouter(prefix="/v1", tags=["inventory"])


class RowErrorBody(BaseModel):
    line: int
    error: str


class ImportReportBody(BaseModel):
    """``rows`` = ``applied`` + ``unchanged`` + ``rejected``; ``errors`` holds the first ones
    by line, ``errors_truncated`` says whether there were more."""

    import_id: str
    source: str
    rows: int
    applied: int
    unchanged: int
    rejected: int
    shortages: int
    seconds: float
    errors: list[RowErrorBody]
    errors_truncated: bool


_TEXT_BODY = {"schema": {"type": "string"}}


@router.post(
    "/stock/bulk",
    response_model=ImportReportBody,
    responses={
        415: {"description": "neither CSV nor JSON lines in UTF-8"},
        422: {"description": "no usable CSV header, or no source"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "CSV with the header sku,location_id,on_hand, or JSON lines of "
            '{"sku", "location_id", "on_hand"}; absolute counts.',
            "content": dict.fromkeys(MEDIA_TYPES, _TEXT_BODY),
        }
    },
)
async def import_snapshot(
    request: Request,
    principal: Annotated[Principal, requires("inventory:write")],
    source: Annotated[
        str, Query(min_length=1, max_length=100, description="the system the snapshot is from")
    ],
) -> dict[str, Any]:
    """Apply a full stock snapshot. Bad rows are reported with their line numbers and not
    applied; the good ones are. Re-sending the same snapshot changes nothing."""
    fmt = _format_of(request.headers.get("content-type"))
    runtime, clock = request.app.state.runtime, request.app.state.clock
    lines = snapshot.split_lines(request.stream())
    try:
        report = await bulk.import_snapshot(runtime.pool, clock, lines, fmt, source)
    except snapshot.SnapshotRefused as exc:
        raise Problem(422, "Snapshot refused", str(exc), type_="snapshot-refused") from None
    except ClientDisconnect:
        # The chunks applied so far stay applied; sending the snapshot again completes it.
        log.warning("snapshot upload cut short", source=source, client=principal.subject)
        raise Problem(
            400, "Upload cut short", "the client went away", type_="client-gone"
        ) from None
    summary = report.as_dict()
    log.info(
        "snapshot imported",
        client=principal.subject,
        **{k: v for k, v in summary.items() if k not in {"errors", "errors_truncated"}},
    )
    return summary


def _format_of(content_type: str | None) -> snapshot.Format:
    media_type, *parameters = (content_type or "").lower().split(";")
    charsets = [
        value.strip().strip('"')
        for name, _, value in (p.partition("=") for p in parameters)
        if name.strip() == "charset"
    ]
    fmt = MEDIA_TYPES.get(media_type.strip())
    if fmt is None or any(c not in {"utf-8", "utf8"} for c in charsets):
        raise Problem(
            415,
            "Unsupported media type",
            f"send text/csv or application/x-ndjson in UTF-8, not {content_type or 'nothing'!r}",
            type_="unsupported-media-type",
        )
    return fmt
