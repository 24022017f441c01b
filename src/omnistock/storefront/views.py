"""What the read routes answer: bodies, ETags, cache headers and problems, as bytes.

Both ways in (the lean ASGI route and the FastAPI one) call these, so they answer the same.
The ETag comes from the entry's versions, the channel's low-stock threshold and whether the
body shows quantities, so every replica gives the same tag for the same figures and a CDN can
revalidate against any of them. It is weak because ``staleness_ms`` differs between otherwise
equal answers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from omnistock.contracts.identifiers import CHANNEL_PATTERN, SKU_PATTERN
from omnistock.platform.auth import CUSTOMER_SCOPE
from omnistock.platform.clock import Clock
from omnistock.platform.problems import PROBLEM_JSON, Problem, field_problem
from omnistock.storefront.model import Entry, ReadModel, stock_status
from omnistock.storefront.settings import StorefrontSettings

QUANTITIES_SCOPE = "storefront:quantities"
READ_SCOPES = (CUSTOMER_SCOPE, "storefront:read", QUANTITIES_SCOPE)
"""Customers' apps and internal clients read status and price; exact quantities need
``storefront:quantities``."""
MAX_BATCH_SKUS = 200

_JSON = b"application/json"
_CHANNEL = re.compile(CHANNEL_PATTERN)
_SKU = re.compile(SKU_PATTERN)
Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Headers
    body: bytes = b""

    def wire_headers(self) -> Headers:
        """The headers as sent: with the body's length, except on a 304, which has none."""
        if self.status == 304:
            return self.headers
        return [*self.headers, (b"content-length", str(len(self.body)).encode())]


def problem_reply(problem: Problem, path: str) -> Reply:
    headers = [(b"content-type", PROBLEM_JSON.encode())]
    if problem.status == 404:
        # A 404 may be cached by a CDN without being told to; a SKU can appear any moment.
        headers.append((b"cache-control", b"no-store"))
    headers += [(k.lower().encode(), v.encode()) for k, v in (problem.headers or {}).items()]
    return Reply(problem.status, headers, orjson.dumps(problem.body(path)))


def shows_quantities(scopes: frozenset[str]) -> bool:
    return QUANTITIES_SCOPE in scopes


class Reads:
    """The answers of the two read routes, from the model, for a caller who may or may not
    see quantities."""

    def __init__(self, model: ReadModel, own: StorefrontSettings, clock: Clock) -> None:
        self._model = model
        self._own = own
        self._clock = clock
        self._public = f"public, max-age={own.cache_max_age_s}".encode()

    def one(
        self, channel: str, sku: str, quantities: bool, if_none_match: str | None, path: str
    ) -> Reply:
        skus = self._model.skus(channel)
        entry = None if skus is None else skus.get(sku)
        if entry is None:
            return problem_reply(_not_found(channel, sku, skus), path)
        threshold = self._own.threshold(channel)
        etag = (
            f'W/"{entry.availability_version}.{entry.price_version}.{threshold}'
            f'{".q" if quantities else ""}"'
        )
        if if_none_match is not None and _matches(if_none_match, etag):
            return Reply(304, self._cache_headers(etag, quantities))
        body = _fields(entry, threshold, quantities)
        body["channel"], body["sku"] = channel, sku
        body["staleness_ms"] = self._staleness_ms(entry)
        return self._ok(etag, quantities, body)

    def many(
        self,
        channel: str,
        skus_param: str | None,
        quantities: bool,
        if_none_match: str | None,
        path: str,
    ) -> Reply:
        """Up to MAX_BATCH_SKUS SKUs of one channel (a listing page); unknown ones are null."""
        if skus_param is None:
            return problem_reply(_required("query.skus"), path)
        wanted = skus_param.split(",")
        problem = _check_batch(channel, wanted)
        if problem is not None:
            return problem_reply(problem, path)
        skus = self._model.skus(channel)
        if skus is None:
            return problem_reply(_not_found(channel, None, None), path)
        threshold = self._own.threshold(channel)
        found = {sku: skus.get(sku) for sku in wanted}
        tag = hashlib.blake2b(digest_size=12)
        for sku, entry in found.items():
            if entry is None:
                tag.update(f"{sku}:-|".encode())
            else:
                tag.update(f"{sku}:{entry.availability_version}.{entry.price_version}|".encode())
        etag = f'W/"{tag.hexdigest()}.{threshold}{".q" if quantities else ""}"'
        if if_none_match is not None and _matches(if_none_match, etag):
            return Reply(304, self._cache_headers(etag, quantities))
        now = self._clock.now().timestamp()
        staleness = max(
            (self._model.staleness_s(e, now) for e in found.values() if e is not None),
            default=max(0.0, now - self._model.oldest_catch_up()),
        )
        body = {
            "channel": channel,
            "skus": {
                sku: None if entry is None else _fields(entry, threshold, quantities)
                for sku, entry in found.items()
            },
            "staleness_ms": max(0, int(staleness * 1000)),
        }
        return self._ok(etag, quantities, body)

    def _ok(self, etag: str, quantities: bool, body: dict[str, Any]) -> Reply:
        headers = self._cache_headers(etag, quantities)
        headers.append((b"content-type", _JSON))
        return Reply(200, headers, orjson.dumps(body))

    def _cache_headers(self, etag: str, quantities: bool) -> Headers:
        # Status and price are what any product page shows: a CDN may share them. Exact
        # quantities are for the caller alone, and revalidated every time.
        cache = b"private, no-cache" if quantities else self._public
        return [(b"etag", etag.encode()), (b"cache-control", cache)]

    def _staleness_ms(self, entry: Entry) -> int:
        now = self._clock.now().timestamp()
        return max(0, int(self._model.staleness_s(entry, now) * 1000))


def _fields(entry: Entry, threshold: int, quantities: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {"status": stock_status(entry.available, threshold)}
    if quantities:
        fields["available"] = entry.available
    fields["price"] = entry.effective
    fields["regular_price"] = entry.regular
    fields["lowest_price_30d"] = entry.lowest_30d
    fields["currency"] = entry.currency
    fields["reduced"] = entry.reduced
    fields["price_valid_until"] = entry.valid_until
    fields["versions"] = {
        "availability": entry.availability_version if entry.has_availability else None,
        "price": entry.price_version if entry.has_price else None,
    }
    return fields


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 weak comparison against a list of tags, or ``*``."""
    if if_none_match == etag:
        return True
    opaque = etag.removeprefix("W/")
    return any(
        tag.strip() == "*" or tag.strip().removeprefix("W/") == opaque
        for tag in if_none_match.split(",")
    )


def _not_found(channel: str, sku: str | None, skus: Mapping[str, Entry] | None) -> Problem:
    # Checked only on a miss: a hit never pays for the patterns.
    invalid = _invalid_path(channel, sku)
    if invalid is not None:
        return invalid
    if skus is None:
        return Problem(
            404,
            "Unknown channel",
            f"no SKU of channel {channel!r} is published",
            type_="unknown-channel",
        )
    return Problem(
        404, "Unknown SKU", f"{sku!r} is not published in channel {channel!r}", type_="unknown-sku"
    )


def _invalid_path(channel: str, sku: str | None) -> Problem | None:
    errors = [
        {"field": f"path.{name}", "message": f"String should match pattern '{pattern.pattern}'"}
        for name, value, pattern in (("channel", channel, _CHANNEL), ("sku", sku, _SKU))
        if value is not None and pattern.fullmatch(value) is None
    ]
    if not errors:
        return None
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return Problem(422, "Invalid request", detail, type_="validation-error", errors=errors)


def _required(field: str) -> Problem:
    error = {"field": field, "message": "Field required"}
    return Problem(
        422, "Invalid request", f"{field}: Field required", type_="validation-error", errors=[error]
    )


def _check_batch(channel: str, skus: list[str]) -> Problem | None:
    invalid = _invalid_path(channel, None)
    if invalid is not None:
        return invalid
    if len(skus) > MAX_BATCH_SKUS:
        return field_problem("query.skus", f"at most {MAX_BATCH_SKUS} SKUs, got {len(skus)}")
    for sku in skus:
        if _SKU.fullmatch(sku) is None:
            return field_problem("query.skus", f"{sku!r} is not a SKU")
    return None
