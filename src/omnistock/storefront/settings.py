"""The storefront's own settings (prefix ``OMNISTOCK_STOREFRONT_``)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints
from pydantic_settings import BaseSettings, SettingsConfigDict

from omnistock.contracts.identifiers import CHANNEL_PATTERN
from omnistock.contracts.inventory import AVAILABILITY
from omnistock.contracts.pricing import PRICES

ChannelId = Annotated[str, StringConstraints(pattern=CHANNEL_PATTERN)]


class StorefrontSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMNISTOCK_STOREFRONT_", extra="ignore")

    # Where the read model comes from; other names only for benchmarks and tests.
    availability_topic: str = AVAILABILITY.name
    prices_topic: str = PRICES.name
    # A SKU is "low stock" while 0 < available <= the threshold of its channel: the default,
    # or the channel's own, e.g. OMNISTOCK_STOREFRONT_LOW_STOCK_THRESHOLDS='{"brand-pl": 3}'.
    # 0 turns "low stock" off for a channel.
    low_stock_threshold: int = Field(default=5, ge=0)
    low_stock_thresholds: dict[ChannelId, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    # How long a CDN or browser may reuse an answer without asking again (with its ETag it
    # revalidates cheaply after that). Answers with exact quantities are never shared.
    cache_max_age_s: int = Field(default=1, ge=0)
    # The hot reads are answered by a lean ASGI route in front of FastAPI; false routes them
    # through FastAPI like every other endpoint (same answers, slower: see docs/storefront.md).
    lean_routes: bool = True
    # How often the replica asks the broker for the topics' end offsets: the resolution of
    # the staleness it reports and of the lag in /metrics.
    freshness_interval_s: float = Field(default=0.25, gt=0)
    # Large fetches while catching up on start; messages are applied a batch at a time.
    fetch_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    consume_batch: int = Field(default=10_000, ge=1)

    def threshold(self, channel: str) -> int:
        return self.low_stock_thresholds.get(channel, self.low_stock_threshold)
