import pytest

from omnistock.platform.http import field_path
from omnistock.platform.problems import Problem, field_problem


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (("body", "lines", 0, "qty"), "lines[0].qty"),
        (("body",), "body"),
        (("query", "skus"), "query.skus"),
        (("path", "sku"), "path.sku"),
        (("body", "delivery", "address", "postcode"), "delivery.address.postcode"),
    ],
)
def test_field_paths_read_like_the_json_a_client_sent(
    location: tuple[object, ...], expected: str
) -> None:
    assert field_path(location) == expected


def test_problem_body_follows_rfc_9457() -> None:
    body = field_problem("lines[0].qty", "must be at least 1").body("/v1/reservations")
    assert body["status"] == 422
    assert body["type"].startswith("urn:omnistock:problem:")
    assert body["instance"] == "/v1/reservations"
    assert body["errors"] == [{"field": "lines[0].qty", "message": "must be at least 1"}]
    assert Problem(409, "Out of stock", sku="A", available=3).body()["available"] == 3
