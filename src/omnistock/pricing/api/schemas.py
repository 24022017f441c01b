"""Request bodies and identifiers of the pricing API, and its settings."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import AwareDatetime, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from omnistock.contracts.identifiers import CHANNEL_PATTERN, SKU_PATTERN

SKU = Annotated[str, Field(pattern=SKU_PATTERN)]
SkuPath = Annotated[str, Path(pattern=SKU_PATTERN)]
ChannelPath = Annotated[str, Path(pattern=CHANNEL_PATTERN)]
# Minor units in a bigint; a price above 10^15 minor units is a typo, not a product.
AMOUNT = Annotated[int, Field(ge=0, le=10**15, description="tax-inclusive, in minor units")]
MAX_QUOTE_SKUS = 500
MAX_LINES = 1_000


class PricingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMNISTOCK_PRICING_", extra="ignore")

    # How long the scheduler rests once nothing is due: the most a transition can be late.
    scheduler_interval_s: float = Field(default=1.0, gt=0)


class PriceList(BaseModel):
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. PLN")
    vat_rate_basis_points: int = Field(
        ge=0, le=10_000, description="the market's VAT rate the prices include; 2300 = 23 %"
    )


class BasePriceIn(BaseModel):
    sku: SKU
    amount: AMOUNT
    valid_from: AwareDatetime | None = Field(default=None, description="now, when left out")


class BasePrices(BaseModel):
    prices: list[BasePriceIn] = Field(min_length=1, max_length=MAX_LINES)


class SaleLineIn(BaseModel):
    sku: SKU
    amount: AMOUNT


class SaleIn(BaseModel):
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    lines: list[SaleLineIn] = Field(min_length=1, max_length=MAX_LINES)


class QuoteRequest(BaseModel):
    skus: list[SKU] = Field(min_length=1, max_length=MAX_QUOTE_SKUS)
    at: AwareDatetime | None = Field(default=None, description="now, when left out")
