"""The orders service's settings (prefix ``OMNISTOCK_ORDERS_``)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from omnistock.contracts.orders import FULFILMENT_GROUP, PAYMENT_DECISIONS_GROUP
from omnistock.orders.domain import RetryPolicy, Windows


class OrdersSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMNISTOCK_ORDERS_", extra="ignore")

    # The services the saga talks to, over their public HTTP APIs.
    inventory_url: str = "http://127.0.0.1:8001"
    pricing_url: str = "http://127.0.0.1:8002"
    payments_url: str = "http://127.0.0.1:8003"
    loyalty_url: str = "http://127.0.0.1:8006"
    # The bearer the service sends them; unset, one is minted from OMNISTOCK_JWT_SECRET
    # (development: with an identity provider, set a client-credentials token here).
    service_token: str | None = None
    # Every call to another service gives up after this long; a saga step is retried.
    step_timeout_s: float = Field(default=5.0, gt=0)
    # A step that fails this often (timeouts, 5xx, unreachable) cancels the order.
    max_attempts: int = Field(default=5, ge=1)
    retry_after_s: float = Field(default=1.0, gt=0)
    retry_at_most_s: float = Field(default=60.0, gt=0)
    # Compensation never gives up; it waits at most this long between tries.
    compensation_retry_at_most_s: float = Field(default=300.0, gt=0)
    # How soon a pending payment authorization is asked about again.
    payment_poll_s: float = Field(default=1.0, gt=0)
    # An order not confirmed this long after it was placed cancels itself.
    confirm_within_s: float = Field(default=900.0, gt=0)
    # A line whose price moved by more than this share of the current price (basis points;
    # 0: any change) refuses the order.
    price_tolerance_bp: int = Field(default=0, ge=0, le=10_000)
    # The consumer groups reading payments' decisions and inventory's shipments.
    payments_group: str = PAYMENT_DECISIONS_GROUP
    fulfilment_group: str = FULFILMENT_GROUP
    # Try before you buy: days to decide after delivery, by market (JSON, e.g. {"pl": 30}),
    # else the default; and days to return a completed order.
    trial_days: int = Field(default=14, ge=1, le=90)
    trial_days_by_market: dict[str, int] = Field(default_factory=dict)
    return_within_days: int = Field(default=30, ge=0, le=365)
    # Orders being placed at once; beyond, a placement is answered 503 with Retry-After at
    # once instead of queueing (each waits on pricing, inventory and the database).
    placements_in_flight: int = Field(default=64, ge=1)
    worker_interval_s: float = Field(default=0.5, gt=0)
    # Steps claimed at most per query, and orders the saga worker carries at once (each holds
    # a database connection only while it records a step's outcome).
    worker_batch_size: int = Field(default=20, ge=1)
    saga_in_flight: int = Field(default=64, ge=1)
    # Checkout comes first: while this many orders or more are being placed at once (the count
    # smoothed over a quarter of a second: a rush counts, a moment's bunching does not; 0:
    # never), the saga carries at most saga_in_flight_when_busy orders, and the processes they
    # share (this one, inventory, payments, the database) serve the customers waiting for
    # their 201. The saga catches up once the rush is over.
    intake_busy_at: int = Field(default=24, ge=0)
    saga_in_flight_when_busy: int = Field(default=2, ge=1)
    # For a rush longer than this the saga takes its full share again: confirmations are late
    # by at most about this much, and orders do not run into CONFIRM_WITHIN_S.
    saga_gives_way_at_most_s: float = Field(default=30.0, ge=0)

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            self.max_attempts,
            timedelta(seconds=self.retry_after_s),
            timedelta(seconds=self.retry_at_most_s),
        )

    def compensation_policy(self) -> RetryPolicy:
        return RetryPolicy(
            2**31,
            timedelta(seconds=self.retry_after_s),
            timedelta(seconds=self.compensation_retry_at_most_s),
        )

    def windows(self) -> Windows:
        return Windows(
            self.trial_days, self.trial_days_by_market, timedelta(days=self.return_within_days)
        )

    def confirm_within(self) -> timedelta:
        return timedelta(seconds=self.confirm_within_s)

    def payment_poll(self) -> timedelta:
        return timedelta(seconds=self.payment_poll_s)

    @property
    def lease(self) -> timedelta:
        """How long a worker holds a step while its calls run: each call times out well
        before; past it, another worker (or the same one after a crash) takes the step."""
        return timedelta(seconds=self.step_timeout_s * 4 + 5)
