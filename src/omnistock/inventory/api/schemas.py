"""Request bodies and identifiers of the inventory API, and its settings."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from omnistock.contracts.identifiers import CHANNEL_PATTERN, SKU_PATTERN
from omnistock.inventory.domain import LOCATION_PATTERN

SKU = Annotated[str, Field(pattern=SKU_PATTERN)]
LOCATION = Annotated[str, Field(pattern=LOCATION_PATTERN)]
SkuPath = Annotated[str, Path(pattern=SKU_PATTERN)]
LocationPath = Annotated[str, Path(pattern=LOCATION_PATTERN)]
ChannelPath = Annotated[str, Path(pattern=CHANNEL_PATTERN)]
COUNTRY = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class InventorySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMNISTOCK_INVENTORY_", extra="ignore")

    reservations_per_client_per_s: float = Field(default=200.0, gt=0)
    reservation_burst: int = Field(default=400, ge=1)
    sweep_interval_s: float = Field(default=1.0, gt=0)
    # Concurrent reservation requests share transactions: this many at once, so many per batch.
    reservation_batch_workers: int = Field(default=4, ge=1)
    reservation_batch_max: int = Field(default=256, ge=1)


class Location(BaseModel):
    kind: Literal["warehouse", "store", "supplier"]
    country: COUNTRY
    capabilities: list[Literal["ship", "click_and_collect", "ship_from_store"]] = ["ship"]
    name: str = Field(min_length=1, max_length=200)


class SourcingRule(BaseModel):
    location_id: LOCATION
    priority: int = Field(ge=1)
    safety_stock: int = Field(default=0, ge=0)


class Channel(BaseModel):
    brand: str = Field(min_length=1, max_length=64)
    market: COUNTRY
    sourcing: list[SourcingRule] = Field(min_length=1, max_length=200)
    availability_cap: int | None = Field(default=None, ge=0)
    max_units_per_customer: int | None = Field(default=None, ge=1)


class StockCount(BaseModel):
    on_hand: int = Field(ge=0, le=1_000_000_000)  # the stock table holds 32-bit counts
    source: str = Field(min_length=1, max_length=100)
    sequence: int = Field(ge=0, le=2**63 - 1)


class StockAdjustment(BaseModel):
    quantity: int = Field(ge=-1_000_000, le=1_000_000)
    reason: Literal["receipt", "store_sale", "damage", "transfer_out", "transfer_in", "correction"]
    reference: str | None = Field(default=None, max_length=200)

    @field_validator("quantity")
    @classmethod
    def not_zero(cls, quantity: int) -> int:
        if quantity == 0:
            raise ValueError("a movement of zero units is no movement")
        return quantity


class ReservationLine(BaseModel):
    sku: SKU
    quantity: int = Field(ge=1, le=10_000)


class ReservationRequest(BaseModel):
    channel_id: str = Field(pattern=CHANNEL_PATTERN)
    lines: list[ReservationLine] = Field(min_length=1, max_length=500)
    ttl_seconds: int = Field(default=900, ge=30, le=7200)
    mode: Literal["all_or_nothing", "per_line"] = "all_or_nothing"
    customer_id: str | None = Field(default=None, max_length=100)
    pickup_location: LOCATION | None = None


class Extension(BaseModel):
    ttl_seconds: int = Field(ge=30, le=7200)


class Commitment(BaseModel):
    order_id: str = Field(min_length=1, max_length=100)


class Shipment(BaseModel):
    shipment_id: str = Field(min_length=1, max_length=100)


class Cancellation(BaseModel):
    reason: str = Field(default="cancelled", min_length=1, max_length=100)


class Return(BaseModel):
    sku: SKU
    location_id: LOCATION
    quantity: int = Field(ge=1, le=1_000_000)
    sellable: bool = True
    reference: str = Field(min_length=1, max_length=200)
