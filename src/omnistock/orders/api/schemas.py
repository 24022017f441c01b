"""Request bodies of the orders API."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path
from pydantic import BaseModel, Field, model_validator

from omnistock.contracts.identifiers import CHANNEL_PATTERN, SKU_PATTERN

REFERENCE = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
OrderPath = Annotated[str, Path(pattern=UUID_PATTERN, description="an order id")]
MAX_LINES = 200


class LineIn(BaseModel):
    sku: str = Field(pattern=SKU_PATTERN)
    quantity: int = Field(strict=True, ge=1, le=1_000)
    # Strict: money is a whole number of minor units, never 12.5 nor "12".
    unit_price: int = Field(
        strict=True, ge=1, le=10**12, description="what the customer saw, in minor units"
    )


class Address(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    street: str = Field(min_length=1, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    postal_code: str = Field(min_length=1, max_length=20)
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")


class HomeDelivery(BaseModel):
    kind: Literal["home"]
    address: Address


class StoreDelivery(BaseModel):
    kind: Literal["store"]
    store_id: str = Field(pattern=REFERENCE)


class LockerDelivery(BaseModel):
    kind: Literal["locker"]
    collection_point_id: str = Field(pattern=REFERENCE)


Delivery = Annotated[HomeDelivery | StoreDelivery | LockerDelivery, Field(discriminator="kind")]


class PaymentIn(BaseModel):
    method: Literal["card", "pay_later", "try_before_you_buy"]
    token: str = Field(
        pattern=r"^[A-Za-z0-9_.:-]{1,200}$",
        description="the PSP's token of the card or pay-later account; never card numbers",
    )


class OrderIn(BaseModel):
    channel_id: str = Field(pattern=CHANNEL_PATTERN)
    platform: Literal["web", "ios", "android"]
    customer_id: str | None = Field(
        default=None, pattern=REFERENCE, description="required for staff; a customer: itself"
    )
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217")
    reservation_id: str | None = Field(
        default=None,
        pattern=UUID_PATTERN,
        description="the checkout's reservation; left out, the order reserves its lines itself",
    )
    lines: list[LineIn] = Field(min_length=1, max_length=MAX_LINES)
    delivery: Delivery
    payment: PaymentIn
    loyalty_points: int = Field(default=0, strict=True, ge=0, le=10**9)

    @model_validator(mode="after")
    def one_line_per_sku(self) -> OrderIn:
        skus = [line.sku for line in self.lines]
        if len(set(skus)) != len(skus):
            raise ValueError("lines: one line per SKU")
        return self
