"""Bearer-token authentication and per-endpoint scopes.

Internal clients (a WMS, a till system, a storefront platform, another omnistock service) carry
OAuth2 client-credentials tokens with scopes such as ``inventory:write``. Customers carry tokens
whose subject is their customer id and whose scope includes ``customer``; they see only their own
data. Tokens are HS256 with a shared secret for local use, or verified against an identity
provider's JWKS. A verified token is cached until it expires: verification costs ~70 µs, which
at thousands of requests per second would be a core's worth of work.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from omnistock.platform.problems import Problem, field_problem
from omnistock.platform.settings import Settings

CUSTOMER_SCOPE = "customer"


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    scopes: frozenset[str]
    expires_at: float

    @property
    def is_customer(self) -> bool:
        return CUSTOMER_SCOPE in self.scopes

    @property
    def customer_id(self) -> str | None:
        return self.subject if self.is_customer else None

    def may_act_for(self, customer_id: str, staff_scope: str) -> bool:
        """A customer acts only for itself; staff and services need ``staff_scope``."""
        if staff_scope in self.scopes:
            return True
        return self.is_customer and self.subject == customer_id

    def customer_to_list(self, asked: str | None, staff_scope: str, what: str) -> str:
        """Whose ``what`` a listing shows: staff and services (``staff_scope``) name the
        customer in ``query.customer_id``; a customer gets its own, named or not, and another
        customer's is a 403 naming the field."""
        if staff_scope in self.scopes:
            if asked is None:
                raise field_problem("query.customer_id", "required")
            return asked
        if asked in (None, self.subject):
            return self.subject
        raise Problem(
            403,
            "Forbidden",
            f"a customer sees only its own {what}",
            type_="forbidden",
            errors=[{"field": "query.customer_id", "message": "not yours"}],
        )


class TokenVerifier:
    def __init__(self, settings: Settings, cache_size: int = 50_000) -> None:
        self._settings = settings
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._cache_size = cache_size
        self._jwks = jwt.PyJWKClient(settings.jwks_url) if settings.jwks_url else None

    def verify(self, token: str) -> Principal:
        cached = self._cached(token)
        if cached is not None:
            return cached
        principal = self._decode(token)
        self._cache[token] = principal
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return principal

    async def verify_in_loop(self, token: str) -> Principal:
        """``verify`` from the event loop: a cached token or a local HS256 check is cheaper
        than the hop to a worker thread, while a JWKS lookup may block on the identity
        provider's network and so goes to one."""
        cached = self._cached(token)
        if cached is not None:
            return cached
        if self._jwks is None:
            return self.verify(token)
        return await run_in_threadpool(self.verify, token)

    def _cached(self, token: str) -> Principal | None:
        cached = self._cache.get(token)
        if cached is not None and cached.expires_at > time.time():
            return cached
        return None

    def _decode(self, token: str) -> Principal:
        try:
            if self._jwks is not None:
                key: Any = self._jwks.get_signing_key_from_jwt(token).key
                algorithms = ["RS256", "ES256"]
            else:
                key, algorithms = self._settings.jwt_secret, ["HS256"]
            claims = jwt.decode(
                token,
                key,
                algorithms=algorithms,
                audience=self._settings.jwt_audience,
                issuer=self._settings.jwt_issuer,
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise Problem(401, "Invalid token", str(exc), type_="unauthorized") from None
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise Problem(401, "Invalid token", "scope must be a space-separated string")
        return Principal(str(claims["sub"]), frozenset(scope.split()), float(claims["exp"]))


def mint_token(
    settings: Settings,
    subject: str,
    scopes: list[str],
    ttl_s: int = 3600,
    now: float | None = None,
) -> str:
    """A locally signed token, for development, tests and the simulator."""
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": subject,
        "scope": " ".join(scopes),
        "iat": issued,
        "exp": issued + ttl_s,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


_bearer = HTTPBearer(auto_error=False)


async def authenticated(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # A coroutine: FastAPI runs a plain function dependency in its thread pool, and the hop
    # there and back costs more than the check itself.
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Problem(401, "Authentication required", "send a bearer token", type_="unauthorized")
    verifier: TokenVerifier = request.app.state.token_verifier
    return await verifier.verify_in_loop(credentials.credentials)


class RequireScopes:
    """A dependency that admits a principal holding any one of ``scopes``."""

    def __init__(self, *scopes: str) -> None:
        if not scopes:
            raise ValueError("an endpoint names at least one scope")
        self.scopes = frozenset(scopes)

    def __call__(self, principal: Principal) -> Principal:
        if principal.scopes.isdisjoint(self.scopes):
            raise Problem(
                403,
                "Insufficient scope",
                f"this endpoint needs one of: {', '.join(sorted(self.scopes))}",
                type_="forbidden",
            )
        return principal

    async def dependency(
        self, principal: Annotated[Principal, Depends(authenticated)]
    ) -> Principal:
        """The check as FastAPI calls it: a coroutine, so it stays off the thread pool."""
        return self(principal)


def requires(*scopes: str) -> Any:
    """``principal: Annotated[Principal, requires("inventory:read")]`` in a route's signature."""
    return Depends(RequireScopes(*scopes).dependency)
