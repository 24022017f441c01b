"""The endpoint's side of a bulk import: the file's format from its media type, the problems a
refused or broken-off upload is answered with, and the shapes of the report's errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from omnistock.platform.imports import Format, ImportRefused
from omnistock.platform.problems import Problem

log = structlog.get_logger(__name__)

MEDIA_TYPES: dict[str, Format] = {
    "text/csv": "csv",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
}


class RowErrorBody(BaseModel):
    line: int
    error: str


def request_body(description: str) -> dict[str, Any]:
    """The OpenAPI request body of an upload: the file as text, in any of the media types."""
    text = {"schema": {"type": "string"}}
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": dict.fromkeys(MEDIA_TYPES, text),
        }
    }


def format_of(content_type: str | None) -> Format:
    """The file's format from its Content-Type; anything but CSV or JSON lines in UTF-8 is
    answered 415."""
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


@contextmanager
def as_problems(what: str, **context: object) -> Iterator[None]:
    """Answer a file that cannot be read with 422 and an upload cut short with 400. ``what``
    names the file ("snapshot"); ``context`` goes into the log."""
    try:
        yield
    except ImportRefused as exc:
        raise Problem(
            422, f"{what.capitalize()} refused", str(exc), type_=f"{what.replace(' ', '-')}-refused"
        ) from None
    except ClientDisconnect:
        # The chunks applied so far stay applied; sending the file again completes it.
        log.warning(f"{what} upload cut short", **context)
        raise Problem(
            400, "Upload cut short", "the client went away", type_="client-gone"
        ) from None
