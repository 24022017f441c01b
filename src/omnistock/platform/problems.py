"""RFC 9457 problem details: every error a client sees is one of these."""

from __future__ import annotations

from typing import Any

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """Raise anywhere in a request to answer with problem+json.

    ``errors`` lists field-level issues as ``{"field": "lines[0].qty", "message": ...}`` so that a
    client can point at what to fix.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type_: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_ or title.lower().replace(" ", "-")
        self.errors = errors
        self.headers = headers
        self.extensions = extensions

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"urn:omnistock:problem:{self.type}",
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extensions)
        return body


def field_problem(field: str, message: str, status: int = 422) -> Problem:
    return Problem(
        status,
        "Invalid request",
        f"{field}: {message}",
        type_="validation-error",
        errors=[{"field": field, "message": message}],
    )
