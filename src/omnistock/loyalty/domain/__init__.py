"""The loyalty programme's rules, pure: no I/O, no framework, no clock reads (time comes in as
an argument). Points and money are integers.

- ``rules``: points per market, tiers and their multipliers, which account an order belongs to;
- ``account``: the member account, its balance and held points, every change one version;
- ``purchase``: an order as the programme sees it, and when and how much it earns.
"""

from omnistock.loyalty.domain.account import (
    HOLD_TRANSITIONS,
    LEDGER_KINDS,
    Account,
    Change,
    Earned,
    Hold,
    HoldStatus,
    Kind,
    hold_move,
)
from omnistock.loyalty.domain.purchase import (
    PURCHASE_TRANSITIONS,
    Earning,
    Line,
    Purchase,
    PurchaseStatus,
    Reversal,
)
from omnistock.loyalty.domain.rules import (
    DEFAULT_TIERS,
    MAX_POINTS,
    TIER_WINDOW_MONTHS,
    InsufficientPoints,
    InvalidTransition,
    MarketRule,
    Membership,
    Policy,
    Refused,
    Tier,
    add_months,
    check_points,
)

__all__ = [
    "DEFAULT_TIERS",
    "HOLD_TRANSITIONS",
    "LEDGER_KINDS",
    "MAX_POINTS",
    "PURCHASE_TRANSITIONS",
    "TIER_WINDOW_MONTHS",
    "Account",
    "Change",
    "Earned",
    "Earning",
    "Hold",
    "HoldStatus",
    "InsufficientPoints",
    "InvalidTransition",
    "Kind",
    "Line",
    "MarketRule",
    "Membership",
    "Policy",
    "Purchase",
    "PurchaseStatus",
    "Refused",
    "Reversal",
    "Tier",
    "add_months",
    "check_points",
    "hold_move",
]
