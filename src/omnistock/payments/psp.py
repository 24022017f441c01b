"""What the payments service needs of a payment service provider (PSP), and an HTTP adapter.

Every request carries an idempotency key (the operation's id): sent twice, it is done once, and
the PSP can be asked later what became of it (``lookup``). That is how a timeout is resolved
without ever charging twice: an answer that never came is looked up, and a request the PSP never
got is sent again under the same key.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from omnistock.platform.client import Answer, CallFailed, ServiceClient

DEVELOPMENT_PSP_API_KEY = "omnistock-psp-sim-development-key"


class PspUnavailable(Exception):
    """No answer (timeout, connection lost, 5xx): the PSP may or may not have done it."""


class Decision(StrEnum):
    APPROVED = "approved"
    DECLINED = "declined"
    PENDING = "pending"  # decided later, announced by webhook (e.g. a pay-later credit check)


@dataclass(frozen=True, slots=True)
class PspResult:
    decision: Decision
    reference: str | None = None  # the PSP's id of what the request made
    reason: str | None = None
    expires_at: datetime | None = None  # authorizations


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    key: str
    merchant_reference: str  # the payment id
    amount: int
    currency: str
    method: str
    payment_method_token: str


class PaymentServiceProvider(Protocol):
    async def authorize(self, request: AuthorizationRequest) -> PspResult: ...

    async def capture(
        self, key: str, authorization: str, amount: int, currency: str
    ) -> PspResult: ...

    async def void(self, key: str, authorization: str) -> PspResult: ...

    async def refund(self, key: str, capture: str, amount: int, currency: str) -> PspResult: ...

    async def lookup(self, key: str) -> PspResult | None:
        """The outcome of the request sent with ``key``; None if the PSP never received it."""
        ...


class HttpPsp:
    """A PSP reached over HTTP with the simulator's API (``omnistock payments psp-sim``); an
    adapter for a real PSP maps the same five calls onto that PSP's API."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float) -> None:
        # aiohttp, as between our services: a fraction of httpx's CPU a call.
        self._client = ServiceClient(base_url, timeout_s)
        self._auth = {"Authorization": f"Bearer {api_key}"}

    async def authorize(self, request: AuthorizationRequest) -> PspResult:
        body = {
            "merchant_reference": request.merchant_reference,
            "amount": request.amount,
            "currency": request.currency,
            "method": request.method,
            "payment_method_token": request.payment_method_token,
        }
        return await self._post("/v1/authorizations", request.key, body)

    async def capture(self, key: str, authorization: str, amount: int, currency: str) -> PspResult:
        body = {"amount": amount, "currency": currency}
        return await self._post(f"/v1/authorizations/{authorization}/captures", key, body)

    async def void(self, key: str, authorization: str) -> PspResult:
        return await self._post(f"/v1/authorizations/{authorization}/void", key, {})

    async def refund(self, key: str, capture: str, amount: int, currency: str) -> PspResult:
        body = {"amount": amount, "currency": currency}
        return await self._post(f"/v1/captures/{capture}/refunds", key, body)

    async def lookup(self, key: str) -> PspResult | None:
        response = await self._send("GET", f"/v1/requests/{key}")
        return None if response.status_code == 404 else result_from(response.json())

    async def close(self) -> None:
        await self._client.aclose()

    async def _post(self, path: str, key: str, body: dict[str, Any]) -> PspResult:
        response = await self._send("POST", path, json=body, headers={"Idempotency-Key": key})
        return result_from(response.json())

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        try:
            response = await self._client.request(
                method, path, json=json, headers={**self._auth, **(headers or {})}
            )
        except CallFailed as exc:
            raise PspUnavailable(str(exc)) from exc
        if response.status_code >= 500 or response.status_code in (401, 403, 429):
            # Unknown outcome, or a misconfiguration an operator fixes: try again later.
            raise PspUnavailable(f"{method} {path}: HTTP {response.status_code}")
        if response.status_code >= 400 and response.status_code != 404:
            raise PspUnavailable(f"{method} {path}: refused: {response.text[:200]}")
        return response


def result_from(body: dict[str, Any]) -> PspResult:
    expires = body.get("expires_at")
    return PspResult(
        Decision(body["decision"]),
        body.get("reference"),
        body.get("reason"),
        datetime.fromisoformat(expires) if expires else None,
    )


def result_body(result: PspResult) -> dict[str, Any]:
    return {
        "decision": result.decision.value,
        "reference": result.reference,
        "reason": result.reason,
        "expires_at": result.expires_at.isoformat() if result.expires_at else None,
    }
