"""The customer-sync service's settings (prefix ``OMNISTOCK_CUSTOMER_SYNC_``)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from omnistock.contracts.collection_points import PARCELS, PICKUP_CODES
from omnistock.contracts.customer_sync import TIMELINE_GROUP
from omnistock.contracts.loyalty import MEMBERS
from omnistock.contracts.orders import ORDERS
from omnistock.contracts.payments import PAYMENTS


class CustomerSyncSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMNISTOCK_CUSTOMER_SYNC_", extra="ignore")

    group: str = TIMELINE_GROUP
    topics: list[str] = Field(
        default_factory=lambda: [
            ORDERS.name,
            PAYMENTS.name,
            MEMBERS.name,
            PARCELS.name,
            PICKUP_CODES.name,
        ]
    )
    # The app reminds the customer this long before a try-before-you-buy trial ends.
    trial_reminder_hours: int = Field(default=48, ge=0)
    # How often the sender looks for due notifications, and how many it takes at a time.
    sender_interval_s: float = Field(default=1.0, gt=0)
    sender_batch_size: int = Field(default=100, ge=1)
    # A failed delivery is tried again after this long.
    retry_after_s: float = Field(default=30.0, gt=0)

    def trial_reminder(self) -> timedelta:
        return timedelta(hours=self.trial_reminder_hours)

    def retry_after(self) -> timedelta:
        return timedelta(seconds=self.retry_after_s)
