"""The storefront's read routes, in process on a read model filled by hand: what they answer,
to whom, with which cache headers, and that the lean route answers exactly as FastAPI does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from omnistock.platform.auth import mint_token
from omnistock.platform.clock import ManualClock
from omnistock.platform.settings import Settings
from omnistock.storefront.api import build_app
from omnistock.storefront.model import ReadModel
from omnistock.storefront.settings import StorefrontSettings

T0 = datetime(2026, 11, 29, 12, tzinfo=UTC)
SETTINGS = Settings()


def token(*scopes: str, ttl_s: int = 3600) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SETTINGS, 'client', list(scopes), ttl_s)}"}


CUSTOMER = token("customer")
INTERNAL = token("storefront:quantities")


def fill(model: ReadModel) -> None:
    model.availability_caught_up = [T0.timestamp() - 0.25, T0.timestamp()]
    model.prices_caught_up = [T0.timestamp(), T0.timestamp()]
    model.apply_availability("brand-pl", "A", 12, 7, 0)
    model.apply_price("brand-pl", "A", 3, 1, 8_999, 12_999, "PLN", True, 9_999, "2026-12-01T23:00Z")
    model.apply_availability("brand-pl", "LOW", 2, 1, 1)
    model.apply_price("brand-pl", "PRICED", 1, 1, 500, 500, "PLN", False, None, None)
    model.apply_availability("brand-cz", "A", 0, 4, 1)


async def client(lean: bool) -> AsyncIterator[httpx.AsyncClient]:
    own = StorefrontSettings(
        lean_routes=lean, low_stock_threshold=5, low_stock_thresholds={"brand-cz": 0}
    )
    app = build_app(SETTINGS, ManualClock(T0 + timedelta(seconds=1)), own=own)
    fill(app.state.model)
    transport = httpx.ASGITransport(app=app)  # no lifespan: the feed stays off
    async with httpx.AsyncClient(transport=transport, base_url="http://storefront") as c:
        yield c


@pytest.fixture
async def lean() -> AsyncIterator[httpx.AsyncClient]:
    async for c in client(lean=True):
        yield c


@pytest.fixture
async def fastapi() -> AsyncIterator[httpx.AsyncClient]:
    async for c in client(lean=False):
        yield c


async def test_one_sku_for_a_customer_shows_status_and_price_not_quantities(
    lean: httpx.AsyncClient,
) -> None:
    answer = await lean.get("/v1/channels/brand-pl/skus/A", headers=CUSTOMER)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "channel": "brand-pl",
        "sku": "A",
        "status": "in_stock",
        "price": 8_999,
        "regular_price": 12_999,
        "lowest_price_30d": 9_999,
        "currency": "PLN",
        "reduced": True,
        "price_valid_until": "2026-12-01T23:00Z",
        "versions": {"availability": 7, "price": 3},
        "staleness_ms": 1250,  # availability partition 0 was last caught up 1.25 s ago
    }
    assert answer.headers["etag"] == 'W/"7.3.5"'
    assert answer.headers["cache-control"] == "public, max-age=1"
    assert answer.headers["content-type"] == "application/json"


async def test_internal_clients_with_the_scope_get_quantities_never_shared(
    lean: httpx.AsyncClient,
) -> None:
    answer = await lean.get("/v1/channels/brand-pl/skus/LOW", headers=INTERNAL)
    body = answer.json()
    assert (body["status"], body["available"], body["price"]) == ("low_stock", 2, None)
    assert body["versions"] == {"availability": 1, "price": None}
    assert answer.headers["cache-control"] == "private, no-cache"
    assert answer.headers["etag"] == 'W/"1.-1.5.q"'
    read_only = await lean.get("/v1/channels/brand-pl/skus/LOW", headers=token("storefront:read"))
    assert "available" not in read_only.json()
    # A channel's own threshold: brand-cz shows no low stock, and 0 is out of stock.
    cz = (await lean.get("/v1/channels/brand-cz/skus/A", headers=INTERNAL)).json()
    assert (cz["status"], cz["available"]) == ("out_of_stock", 0)
    priced_only = (await lean.get("/v1/channels/brand-pl/skus/PRICED", headers=INTERNAL)).json()
    assert (priced_only["status"], priced_only["available"]) == ("out_of_stock", None)


async def test_a_known_etag_is_answered_not_modified(lean: httpx.AsyncClient) -> None:
    first = await lean.get("/v1/channels/brand-pl/skus/A", headers=CUSTOMER)
    etag = first.headers["etag"]
    again = await lean.get(
        "/v1/channels/brand-pl/skus/A", headers={**CUSTOMER, "If-None-Match": etag}
    )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag
    listed = await lean.get(
        "/v1/channels/brand-pl/skus/A",
        headers={**CUSTOMER, "If-None-Match": f'"other", {etag.removeprefix("W/")}'},
    )
    assert listed.status_code == 304
    changed = await lean.get(
        "/v1/channels/brand-pl/skus/A", headers={**INTERNAL, "If-None-Match": etag}
    )
    assert changed.status_code == 200, "another view of the SKU is another representation"


async def test_unknown_channels_and_skus_are_problems(lean: httpx.AsyncClient) -> None:
    for path, kind in (
        ("/v1/channels/brand-xx/skus/A", "unknown-channel"),
        ("/v1/channels/brand-pl/skus/NOPE", "unknown-sku"),
        ("/v1/channels/brand-xx/skus?skus=A", "unknown-channel"),
    ):
        answer = await lean.get(path, headers=CUSTOMER)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.headers["cache-control"] == "no-store"
        assert answer.json()["type"] == f"urn:omnistock:problem:{kind}"


async def test_a_listing_page_in_one_request(lean: httpx.AsyncClient) -> None:
    answer = await lean.get(
        "/v1/channels/brand-pl/skus", params={"skus": "A,LOW,MISSING,A"}, headers=INTERNAL
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert list(body["skus"]) == ["A", "LOW", "MISSING"]
    assert body["skus"]["MISSING"] is None
    assert body["skus"]["A"]["available"] == 12
    assert body["skus"]["LOW"]["status"] == "low_stock"
    assert body["staleness_ms"] == 1250
    again = await lean.get(
        "/v1/channels/brand-pl/skus",
        params={"skus": "A,LOW,MISSING,A"},
        headers={**INTERNAL, "If-None-Match": answer.headers["etag"]},
    )
    assert again.status_code == 304
    other = await lean.get("/v1/channels/brand-pl/skus", params={"skus": "A"}, headers=INTERNAL)
    assert other.headers["etag"] != answer.headers["etag"]


async def test_bad_listings_name_the_field(lean: httpx.AsyncClient) -> None:
    too_many = ",".join(f"S{n}" for n in range(201))
    for params, message in (
        ({"skus": too_many}, "at most 200 SKUs, got 201"),
        ({"skus": "A,,B"}, "'' is not a SKU"),
        ({}, "Field required"),
    ):
        answer = await lean.get("/v1/channels/brand-pl/skus", params=params, headers=CUSTOMER)
        assert answer.status_code == 422, params
        assert answer.json()["errors"] == [{"field": "query.skus", "message": message}]


REQUESTS: list[tuple[str, dict[str, str]]] = [
    ("/v1/channels/brand-pl/skus/A", CUSTOMER),
    ("/v1/channels/brand-pl/skus/A", INTERNAL),
    ("/v1/channels/brand-pl/skus/A", {**CUSTOMER, "If-None-Match": 'W/"7.3.5"'}),
    ("/v1/channels/brand-pl/skus/LOW", token("storefront:read")),
    ("/v1/channels/brand-pl/skus/NOPE", CUSTOMER),
    ("/v1/channels/brand-xx/skus/A", CUSTOMER),
    ("/v1/channels/Bad_Channel/skus/bad%20sku", CUSTOMER),
    ("/v1/channels/brand-pl/skus?skus=A,LOW,NOPE", INTERNAL),
    ("/v1/channels/brand-pl/skus?skus=A,LOW,NOPE", CUSTOMER),
    ("/v1/channels/brand-pl/skus?skus=A,bad%20sku", CUSTOMER),
    ("/v1/channels/Bad_Channel/skus?skus=A", CUSTOMER),
    ("/v1/channels/brand-pl/skus", CUSTOMER),
    ("/v1/channels/brand-pl/skus?skus=" + ",".join(f"S{n}" for n in range(201)), CUSTOMER),
    ("/v1/channels/brand-pl/skus/A", {}),
    ("/v1/channels/brand-pl/skus/A", {"Authorization": "Basic abc"}),
    ("/v1/channels/brand-pl/skus/A", {"Authorization": "Bearer x.y.z"}),
    ("/v1/channels/brand-pl/skus/A", token("customer", ttl_s=-10)),
    ("/v1/channels/brand-pl/skus?skus=A", token("inventory:read")),
]


@pytest.mark.parametrize(("path", "headers"), REQUESTS)
async def test_the_lean_route_answers_exactly_as_fastapi(
    lean: httpx.AsyncClient, fastapi: httpx.AsyncClient, path: str, headers: dict[str, str]
) -> None:
    ours, theirs = await lean.get(path, headers=headers), await fastapi.get(path, headers=headers)
    assert (ours.status_code, ours.content) == (theirs.status_code, theirs.content)
    assert _comparable(ours.headers) == _comparable(theirs.headers)
    assert ours.headers["x-request-id"]


def _comparable(headers: httpx.Headers) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in headers.multi_items() if k != "x-request-id")
