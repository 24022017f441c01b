"""The loyalty service's settings (prefix ``OMNISTOCK_LOYALTY_``). Rules and brand groups are
JSON, e.g. ``OMNISTOCK_LOYALTY_RULES_BY_MARKET='{"de": {"points_per_unit": 2}}'``."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from omnistock.contracts.loyalty import ORDERS_GROUP
from omnistock.loyalty.domain import DEFAULT_TIERS, MarketRule, Policy, Tier


class TierSetting(BaseModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    from_points: int = Field(strict=True, ge=0)
    multiplier_percent: int = Field(strict=True, ge=0, le=10_000)


class RuleSetting(BaseModel):
    """A market's rule: points per whole currency unit, and its tiers (the first from 0)."""

    points_per_unit: int = Field(default=1, strict=True, ge=0, le=1_000)
    minor_units_per_unit: int = Field(default=100, strict=True, ge=1, le=10_000)
    tiers: list[TierSetting] = Field(
        default_factory=lambda: [
            TierSetting(
                name=t.name, from_points=t.from_points, multiplier_percent=t.multiplier_percent
            )
            for t in DEFAULT_TIERS
        ]
    )

    @model_validator(mode="after")
    def _valid(self) -> RuleSetting:
        self.rule()  # the domain's own checks, at start-up rather than at the first order
        return self

    def rule(self) -> MarketRule:
        return MarketRule(
            self.points_per_unit,
            self.minor_units_per_unit,
            tuple(Tier(t.name, t.from_points, t.multiplier_percent) for t in self.tiers),
        )


class LoyaltySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OMNISTOCK_LOYALTY_", extra="ignore")

    # An order earns this many days after it was completed, once nothing can come back.
    return_window_days: int = Field(default=30, ge=0, le=365)
    # Earned points expire unspent this many months after they were earned.
    points_valid_months: int = Field(default=24, ge=1, le=120)
    default_rule: RuleSetting = Field(default_factory=RuleSetting)
    # Markets (a channel's last part, "brand-pl" -> "pl") with rules of their own.
    rules_by_market: dict[str, RuleSetting] = Field(default_factory=dict)
    # Brands that share one account per customer and market, e.g. {"brand-a": "group"};
    # a brand not listed is a group of its own.
    brand_groups: dict[str, str] = Field(default_factory=dict)
    # The consumer group reading the orders topic; its dead letters go to the same name + .dlq.
    orders_group: str = ORDERS_GROUP
    # How often the earning, expiry and tier jobs look for work when they found none.
    job_interval_s: float = Field(default=5.0, gt=0)
    job_batch_size: int = Field(default=100, ge=1, le=10_000)

    def policy(self) -> Policy:
        return Policy(
            rules={market: rule.rule() for market, rule in self.rules_by_market.items()},
            default_rule=self.default_rule.rule(),
            brand_groups=dict(self.brand_groups),
            return_window=timedelta(days=self.return_window_days),
            points_valid_months=self.points_valid_months,
        )
