"""Request bodies and identifiers of the payments API, and its settings."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import Path
from pydantic import AwareDatetime, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from omnistock.payments.domain import MAX_AMOUNT, Method
from omnistock.payments.psp import DEVELOPMENT_PSP_API_KEY
from omnistock.payments.service import Timing
from omnistock.payments.signatures import DEVELOPMENT_WEBHOOK_SECRET
from omnistock.platform.settings import LOOPBACK_HOSTS

REFERENCE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
PaymentPath = Annotated[str, Path(pattern=r"^[0-9a-fA-F-]{36}$", description="a payment id")]
# Strict: money is a whole number of minor units, never 12.5 nor "12".
Amount = Annotated[
    int, Field(strict=True, ge=1, le=MAX_AMOUNT, description="in minor units of the currency")
]


class PaymentsSettings(BaseSettings):
    """Environment prefix ``OMNISTOCK_PAYMENTS_``."""

    model_config = SettingsConfigDict(env_prefix="OMNISTOCK_PAYMENTS_", extra="ignore")

    # The PSP: the simulator's HTTP API at this URL; unset, a simulator inside the service.
    psp_url: str | None = None
    psp_api_key: str = DEVELOPMENT_PSP_API_KEY
    psp_timeout_s: float = Field(default=10.0, gt=0)
    webhook_secret: str = DEVELOPMENT_WEBHOOK_SECRET
    webhook_tolerance_s: float = Field(default=300, gt=0)
    # How long webhook event ids are remembered (PSPs stop redelivering within days).
    webhook_retention_s: float = Field(default=30 * 24 * 3600, gt=0)
    # Renew an authorization (try before you buy) or announce its expiry this long before.
    reauthorize_before_s: float = Field(default=24 * 3600, gt=0)
    # An operation without an answer is taken over by the recovery job this long after it was
    # sent, then after twice as long each time, up to retry_at_most_s.
    retry_after_s: float = Field(default=30, gt=0)
    retry_at_most_s: float = Field(default=3600, gt=0)
    scheduler_interval_s: float = Field(default=1.0, gt=0)
    recovery_interval_s: float = Field(default=1.0, gt=0)

    def refusal_to_serve(self, host: str) -> str | None:
        """Why serving beyond this machine would be unsafe: anyone who has read this source
        knows the development webhook secret (and could forge the PSP's outcomes) and the
        development PSP key."""
        if host in LOOPBACK_HOSTS:
            return None
        if self.webhook_secret == DEVELOPMENT_WEBHOOK_SECRET or len(self.webhook_secret) < 32:
            return (
                f"refusing to serve on {host} with the development (or a short) webhook secret: "
                "set OMNISTOCK_PAYMENTS_WEBHOOK_SECRET (32 bytes or more)"
            )
        if self.psp_url and self.psp_api_key == DEVELOPMENT_PSP_API_KEY:
            return (
                f"refusing to serve on {host} with the development PSP key: "
                "set OMNISTOCK_PAYMENTS_PSP_API_KEY"
            )
        return None

    def timing(self) -> Timing:
        return Timing(
            lead=timedelta(seconds=self.reauthorize_before_s),
            retry_after=timedelta(seconds=self.retry_after_s),
            retry_at_most=timedelta(seconds=self.retry_at_most_s),
        )


class AuthorizeIn(BaseModel):
    payment_method_token: str = Field(
        pattern=r"^[A-Za-z0-9_.:-]{1,200}$",
        description="the PSP's token for the card or pay-later account; never card numbers",
    )


class PaymentIn(BaseModel):
    order_id: str = Field(pattern=REFERENCE_PATTERN)
    customer_id: str = Field(pattern=REFERENCE_PATTERN)
    method: Method
    amount: Amount
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. PLN")
    authorize: AuthorizeIn | None = Field(
        default=None, description="ask for the authorization in the same request"
    )


class AmountIn(BaseModel):
    amount: Amount


class TrialWindowIn(BaseModel):
    ends_at: AwareDatetime = Field(
        description="when the trial closes: what is not captured by then is charged"
    )


class PspWebhookIn(BaseModel):
    """A PSP webhook: a request's decision (``request.decided``) or a lapsed authorization
    (``authorization.expired``)."""

    id: str = Field(min_length=1, max_length=200)
    type: str = Field(min_length=1, max_length=100)
    created_at: AwareDatetime
    idempotency_key: str | None = None
    operation: str | None = None
    decision: Literal["approved", "declined", "pending"] | None = None
    reference: str | None = None
    reason: str | None = None
    expires_at: AwareDatetime | None = None
    merchant_reference: str | None = None
    amount: int | None = None
    currency: str | None = None
