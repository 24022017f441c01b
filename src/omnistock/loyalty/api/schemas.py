"""Request bodies and identifiers of the loyalty API."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, Field

from omnistock.contracts.identifiers import CHANNEL_PATTERN
from omnistock.loyalty.domain import MAX_POINTS

REFERENCE = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$"
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
OrderPath = Annotated[str, Path(pattern=REFERENCE, description="the order the hold is for")]
MemberPath = Annotated[str, Path(pattern=UUID_PATTERN, description="a member id")]


class HoldIn(BaseModel):
    """Points to redeem on an order: the member is the customer's account in the channel's
    brand group and market."""

    order_id: str = Field(pattern=REFERENCE)
    customer_id: str = Field(pattern=REFERENCE)
    channel_id: str = Field(pattern=CHANNEL_PATTERN, description="brand-market, e.g. brand-pl")
    # Strict: points are whole numbers, never 12.5 nor "12".
    points: int = Field(strict=True, ge=1, le=MAX_POINTS)
