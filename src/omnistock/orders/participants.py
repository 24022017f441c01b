"""HTTP clients of the services the orders saga and intake talk to: inventory, pricing,
payments and loyalty, each at its base URL, authenticated with the orders service's own token."""

from __future__ import annotations

import time
from typing import Any

from omnistock.orders import SERVICE
from omnistock.orders.settings import OrdersSettings
from omnistock.platform.auth import mint_token
from omnistock.platform.client import Answer, ServiceClient
from omnistock.platform.settings import Settings

SCOPES = [
    # Commit a reservation and cancel an order's allocations; with it inventory also lets the
    # order system read and release the reservations storefronts made for its orders.
    "inventory:allocate",
    "inventory:reserve",
    "pricing:read",
    "payments:write",
    "payments:read",
    "loyalty:redeem",
]
TOKEN_LIFETIME_S = 3600


class ServiceToken:
    """The configured token, or one minted locally and renewed before it lapses."""

    def __init__(self, settings: Settings, configured: str | None) -> None:
        self._settings = settings
        self._configured = configured
        self._minted: tuple[str, float] | None = None

    def header(self) -> dict[str, str]:
        if self._configured:
            return {"Authorization": f"Bearer {self._configured}"}
        # Tokens carry wall-clock expiry: this is the one place the real time is right.
        now = time.time()
        if self._minted is None or self._minted[1] - now < TOKEN_LIFETIME_S / 4:
            token = mint_token(self._settings, SERVICE, SCOPES, TOKEN_LIFETIME_S, now)
            self._minted = (token, now + TOKEN_LIFETIME_S)
        return {"Authorization": f"Bearer {self._minted[0]}"}


class Participants:
    """One pooled client per service. Every call times out after ``step_timeout_s``; a
    transport error or a timeout raises ``CallFailed`` for the caller to retry."""

    def __init__(self, settings: Settings, own: OrdersSettings) -> None:
        self._token = ServiceToken(settings, own.service_token)
        timeout = own.step_timeout_s
        self.inventory = ServiceClient(own.inventory_url, timeout)
        self.pricing = ServiceClient(own.pricing_url, timeout)
        self.payments = ServiceClient(own.payments_url, timeout)
        self.loyalty = ServiceClient(own.loyalty_url, timeout)

    async def close(self) -> None:
        for client in (self.inventory, self.pricing, self.payments, self.loyalty):
            await client.aclose()

    async def call(
        self,
        client: ServiceClient,
        method: str,
        path: str,
        *,
        body: Any = None,
        idempotency_key: str | None = None,
    ) -> Answer:
        headers = self._token.header()
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        return await client.request(method, path, json=body, headers=headers)
