"""Events of the pricing service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omnistock.platform.events import event_type
from omnistock.platform.kafka import TopicSpec

PRICES = TopicSpec(
    "omnistock.pricing.prices.v1",
    compacted=True,
    description="The effective price of each SKU in each channel; compacted, keyed `channel:sku`.",
)
TOPICS = [PRICES]


@event_type
@dataclass(frozen=True, slots=True)
class PriceChanged:
    """What a channel charges for a SKU changed. Amounts in minor units of ``currency``;
    ``lowest_30d`` is set while a reduction is shown (EU Omnibus). Readers keep the highest
    version."""

    TYPE: ClassVar[str] = "omnistock.pricing.price-changed.v1"
    TOPIC: ClassVar[str] = PRICES.name

    channel_id: str
    sku: str
    version: int
    effective: int
    regular: int
    currency: str
    reduced: bool
    lowest_30d: int | None = None
    valid_until: str | None = None
