"""The collection-points service's settings (prefix ``OMNISTOCK_COLLECTION_POINTS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from omnistock.collection_points.domain import MAX_PICKUP_DAYS


class CollectionPointsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMNISTOCK_COLLECTION_POINTS_", extra="ignore")

    # Days a parcel waits to be collected at a point that sets none of its own.
    pickup_days: int = Field(default=7, ge=1, le=MAX_PICKUP_DAYS)
    # How often the expiry job looks for parcels past their deadline, and how many it takes
    # in one transaction.
    expiry_interval_s: float = Field(default=30.0, gt=0)
    expiry_batch_size: int = Field(default=100, ge=1, le=1_000)
