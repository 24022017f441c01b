"""Events of the loyalty service.

One stream, keyed by member id (a member is one customer's account in one brand group and
market), with the member id as subject and the account's version as ``aggregateversion``: every
change of an account is one version, one entry of its ledger (or of its tier history) and one
event here. A reader keeps the highest version it has seen and drops older ones. Every event
carries the account's ``balance`` (points the member may spend) and ``held`` (points held for
orders in progress) after the change; points are whole numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omnistock.platform.events import event_type
from omnistock.platform.kafka import TopicSpec, dead_letter_topic

MEMBERS = TopicSpec(
    "omnistock.loyalty.members.v1",
    description="Member accounts: points held, committed, released, earned, reversed and "
    "expired, tier changes; keyed by member id.",
)
ORDERS_GROUP = "omnistock.loyalty.orders"
"""The loyalty service's consumer group on the orders topic."""
ORDERS_DEAD_LETTERS = TopicSpec(
    dead_letter_topic(ORDERS_GROUP),
    partitions=1,
    description="Orders events the loyalty service could not read, with the reason.",
)
TOPICS = [MEMBERS, ORDERS_DEAD_LETTERS]


@event_type
@dataclass(frozen=True, slots=True)
class PointsHeld:
    """``points`` were set aside for an order being placed (redemption); they leave the
    balance now and are spent when the hold is committed, or come back when it is released."""

    TYPE: ClassVar[str] = "omnistock.loyalty.points-held.v1"
    TOPIC: ClassVar[str] = MEMBERS.name

    member_id: str
    customer_id: str
    version: int
    order_id: str
    points: int
    balance: int
    held: int


@event_type
@dataclass(frozen=True, slots=True)
class PointsCommitted:
    """The order's held ``points`` were spent for good."""

    TYPE: ClassVar[str] = "omnistock.loyalty.points-committed.v1"
    TOPIC: ClassVar[str] = MEMBERS.name

    member_id: str
    customer_id: str
    version: int
    order_id: str
    points: int
    balance: int
    held: int


@event_type
@dataclass(frozen=True, slots=True)
class PointsReleased:
    """The order's held ``points`` went back to the balance (the order was cancelled or did
    not need them)."""

    TYPE: ClassVar[str] = "omnistock.loyalty.points-released.v1"
    TOPIC: ClassVar[str] = MEMBERS.name

    member_id: str
    customer_id: str
    version: int
    order_id: str
    points: int
    balance: int
    held: int


@event_type
@dataclass(frozen=True, slots=True)
class PointsEarned:
    """The order's return window passed: ``points`` for the value kept (``kept_value``, minor
    units of ``currency``) at the member's tier multiplier (``multiplier_percent``, 100 = ×1).
    They expire at ``expires_at`` unless spent before."""

    TYPE: ClassVar[str] = "omnistock.loyalty.points-earned.v1"
    TOPIC: ClassVar[str] = MEMBERS.name

    member_id: str
    customer_id: str
    version: int
    order_id: str
    points: int
    balance: int
    held: int
    kept_value: int
    currency: str
    tier: str
    multiplier_percent: int
    expires_at: str


@event_type
@dataclass(frozen=True, slots=True)
class PointsReversed:
    """Goods of an order that already earned points came back (``return_id``): ``points``
    were taken back; ``unrecovered`` is what should have been but was spent already (the
    balance never goes below zero)."""

    TYPE: ClassVar[str] = "omnistock.loyalty.points-reversed.v1"
    TOPIC: ClassVar[str] = MEMBERS.name

    member_id: str
    customer_id: str
    version: int
    order_id: str
    return_id: str
    points: int
    unrecovered: int
    balance: int
    held: int


@event_type
@dataclass(frozen=True, slots=True)
class PointsExpired:
    """Earned ``points`` reached the end of their validity unspent."""

    TYPE: ClassVar[str] = "omnistock.loyalty.points-expired.v1"
    TOPIC: ClassVar[str] = MEMBERS.name

    member_id: str
    customer_id: str
    version: int
    points: int
    balance: int
    held: int


@event_type
@dataclass(frozen=True, slots=True)
class TierChanged:
    """The member's tier was recomputed from the points qualified in the last 12 months
    (``qualifying_points``, before multipliers) and is now ``tier``."""

    TYPE: ClassVar[str] = "omnistock.loyalty.tier-changed.v1"
    TOPIC: ClassVar[str] = MEMBERS.name

    member_id: str
    customer_id: str
    version: int
    tier: str
    previous_tier: str
    qualifying_points: int
    brand_group: str
    market: str
