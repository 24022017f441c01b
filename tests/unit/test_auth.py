from __future__ import annotations

import time

import jwt
import pytest

from omnistock.platform.auth import Principal, RequireScopes, TokenVerifier, mint_token
from omnistock.platform.problems import Problem
from omnistock.platform.settings import Settings

settings = Settings(jwt_secret="unit-test-secret-0123456789abcdef0123")


def test_a_minted_token_verifies_with_its_scopes() -> None:
    token = mint_token(settings, "wms-7", ["inventory:write", "inventory:read"])
    principal = TokenVerifier(settings).verify(token)
    assert principal.subject == "wms-7"
    assert principal.scopes == {"inventory:write", "inventory:read"}
    assert not principal.is_customer


def test_customer_tokens_act_only_for_their_own_customer() -> None:
    principal = TokenVerifier(settings).verify(mint_token(settings, "cust-1", ["customer"]))
    assert principal.customer_id == "cust-1"
    assert principal.may_act_for("cust-1", staff_scope="orders:admin")
    assert not principal.may_act_for("cust-2", staff_scope="orders:admin")
    staff = Principal("agent", frozenset({"orders:admin"}), time.time() + 60)
    assert staff.may_act_for("cust-2", staff_scope="orders:admin")


def test_a_customer_lists_only_its_own_and_staff_must_name_whose() -> None:
    customer = Principal("cust-1", frozenset({"customer"}), time.time() + 60)
    assert customer.customer_to_list(None, "orders:read", "orders") == "cust-1"
    assert customer.customer_to_list("cust-1", "orders:read", "orders") == "cust-1"
    with pytest.raises(Problem) as other:
        customer.customer_to_list("cust-2", "orders:read", "orders")
    assert other.value.status == 403
    assert other.value.errors == [{"field": "query.customer_id", "message": "not yours"}]
    staff = Principal("agent", frozenset({"orders:read"}), time.time() + 60)
    assert staff.customer_to_list("cust-2", "orders:read", "orders") == "cust-2"
    with pytest.raises(Problem) as unnamed:
        staff.customer_to_list(None, "orders:read", "orders")
    assert (unnamed.value.status, unnamed.value.errors[0]["field"]) == (422, "query.customer_id")


@pytest.mark.parametrize(
    "claims",
    [
        {"aud": "someone-else"},
        {"iss": "another-issuer"},
        {"exp": 1},
        {"scope": ["not", "a", "string"]},
    ],
)
def test_tokens_with_wrong_claims_are_refused(claims: dict[str, object]) -> None:
    base = {
        "sub": "x",
        "scope": "a",
        "exp": int(time.time()) + 60,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
    }
    token = jwt.encode({**base, **claims}, settings.jwt_secret, algorithm="HS256")
    with pytest.raises(Problem) as refused:
        TokenVerifier(settings).verify(token)
    assert refused.value.status == 401


def test_a_token_signed_with_another_secret_is_refused() -> None:
    other = Settings(jwt_secret="another-secret-0123456789abcdef01234")
    with pytest.raises(Problem):
        TokenVerifier(settings).verify(mint_token(other, "x", ["a"]))


def test_a_verified_token_is_cached_until_it_expires() -> None:
    verifier = TokenVerifier(settings)
    token = mint_token(settings, "x", ["a"], ttl_s=60)
    assert verifier.verify(token) is verifier.verify(token)


def test_scope_check() -> None:
    principal = Principal("x", frozenset({"inventory:read"}), time.time() + 60)
    assert RequireScopes("inventory:read", "inventory:admin")(principal) is principal
    with pytest.raises(Problem) as refused:
        RequireScopes("inventory:write")(principal)
    assert refused.value.status == 403
