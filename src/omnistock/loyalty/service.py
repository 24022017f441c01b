"""Loyalty use cases, each in the caller's transaction: load and lock, let the domain decide,
save the account with its ledger and its events (the outbox).

Redemption comes from the order saga over HTTP (holds); earning comes from the orders topic
(an order placed, completed, cancelled, goods returned) and the jobs that run on the clock
(earning once the return window has passed, expiry, tier review).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from omnistock.contracts import loyalty as events
from omnistock.contracts.orders import OrderPlaced, OrderStatusChanged, ReturnUpdated
from omnistock.loyalty import repository
from omnistock.loyalty.domain import (
    Account,
    Change,
    Earned,
    Hold,
    HoldStatus,
    InsufficientPoints,
    Kind,
    Line,
    MarketRule,
    Policy,
    Purchase,
    PurchaseStatus,
    Refused,
)
from omnistock.platform.clock import Clock
from omnistock.platform.outbox import OutboxMessage, add_to_outbox

log = structlog.get_logger(__name__)

SOURCE = "/omnistock/loyalty"


class NotFound(Exception):
    def __init__(self, what: str, key: str) -> None:
        super().__init__(f"no {what} {key}")


class HoldConflict(Exception):
    """The order's hold is not the one asked for; ``field`` names the difference."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class HoldRequest:
    order_id: str
    customer_id: str
    channel_id: str
    points: int


# -- redemption: holds --


async def place_hold(
    conn: asyncpg.Connection, clock: Clock, policy: Policy, request: HoldRequest
) -> tuple[Hold, bool]:
    """Hold the points of an order; once per order. Returns the hold and whether it is new:
    the same request again finds the hold as it is now."""
    now = clock.now()
    membership = policy.membership(request.customer_id, request.channel_id)
    account = await repository.member_of(conn, membership, lock=True)
    existing = await repository.load_hold(conn, request.order_id, lock=True)
    if existing is not None:
        _check_same(existing, account, request.points)
        return existing, False
    if account is None:
        raise InsufficientPoints(request.points, 0)
    version = account.version
    account.hold(request.order_id, request.points, now)
    hold = Hold(request.order_id, account.member_id, request.points)
    if not await repository.insert_hold(conn, hold, now):
        # A release of the order came at the same instant (it closes the order to holds).
        raise HoldConflict("order_id", "the order's hold changed meanwhile: ask again")
    await _save(conn, clock, account, version)
    return hold, True


def _check_same(hold: Hold, account: Account | None, points: int) -> None:
    if hold.member_id is None:
        raise HoldConflict("order_id", "the order's hold was released: it takes no points now")
    if account is None or hold.member_id != account.member_id:
        raise HoldConflict("order_id", "the order holds points of another member")
    if hold.points != points:
        raise HoldConflict("points", f"the order holds {hold.points} points already")


async def commit_hold(conn: asyncpg.Connection, clock: Clock, order_id: str) -> Hold:
    """Spend the held points; committing again changes nothing, a released hold refuses."""
    return await _move_hold(conn, clock, order_id, HoldStatus.COMMITTED)


async def release_hold(conn: asyncpg.Connection, clock: Clock, order_id: str) -> Hold:
    """Give the held points back; releasing again changes nothing, a committed hold refuses.
    An order with no hold yet is closed to holds: a hold the saga asked for and gave up on
    must not arrive after its compensation and hold points for good."""
    if await repository.load_hold(conn, order_id) is None:
        closed = Hold(order_id, None, 0, HoldStatus.RELEASED)
        if await repository.insert_hold(conn, closed, clock.now()):
            return closed
    return await _move_hold(conn, clock, order_id, HoldStatus.RELEASED)


async def _move_hold(
    conn: asyncpg.Connection, clock: Clock, order_id: str, target: HoldStatus
) -> Hold:
    found = await repository.load_hold(conn, order_id)
    if found is None:
        raise NotFound("hold for order", order_id)
    # The member first, then the hold: the lock order of every path.
    account = None
    if found.member_id is not None:
        account = await repository.load_member(conn, found.member_id, lock=True)
    hold = await repository.load_hold(conn, order_id, lock=True)
    assert hold is not None, "a hold is never deleted"
    if not hold.move(target):
        return hold
    assert account is not None, "a hold without a member is released, and stays so"
    now, version = clock.now(), account.version
    if target is HoldStatus.COMMITTED:
        account.commit(order_id, hold.points, now)
    else:
        account.release(order_id, hold.points, now)
    await repository.update_hold(conn, hold, now)
    await _save(conn, clock, account, version)
    if target is HoldStatus.RELEASED:
        await repository.expire_soon_if_overdue(conn, account.member_id, now)
    return hold


# -- what the orders topic tells --


async def record_order(
    conn: asyncpg.Connection, clock: Clock, policy: Policy, placed: OrderPlaced
) -> None:
    """An order was placed: its account (opened on the customer's first order in the brand
    group and market) and its lines, to earn from once it completes."""
    if await repository.load_purchase(conn, placed.order_id) is not None:
        return
    try:
        membership = policy.membership(placed.customer_id, placed.channel_id)
    except Refused:
        log.warning("order of a channel with no market", order_id=placed.order_id)
        return
    now = clock.now()
    lowest = policy.rule(membership.market).lowest
    await repository.open_account(conn, membership, lowest.name, now)
    account = await repository.member_of(conn, membership)
    assert account is not None
    purchase = Purchase(
        placed.order_id,
        account.member_id,
        placed.currency,
        membership.market,
        [Line(x.sku, x.quantity, x.unit_price) for x in placed.lines],
        order_version=placed.version,
        points_to_redeem=placed.loyalty_points,
    )
    await repository.insert_purchase(conn, purchase, now)


async def order_status_changed(
    conn: asyncpg.Connection,
    clock: Clock,
    policy: Policy,
    changed: OrderStatusChanged,
    at: datetime,
) -> None:
    """Completed (at ``at``): the order earns once its return window has passed, and points
    it still holds are spent. Cancelled: points it holds come back."""
    if changed.status not in ("completed", "cancelled"):
        # Most of an order's changes mean nothing here: answered without a query, so that a
        # backlog of them (after an outage) drains in seconds. Versions only order the
        # changes that do count against each other and against returns.
        return
    purchase = await repository.load_purchase(conn, changed.order_id, lock=True)
    if purchase is None or changed.version <= purchase.order_version:
        return  # an order placed before the programme knew it, or an old version
    purchase.order_version = changed.version
    if changed.status == "completed":
        purchase.complete(at, policy.return_window)
    elif changed.status == "cancelled":
        purchase.cancel()
    await repository.save_purchase(conn, purchase)
    if changed.status == "completed":
        await _settle_hold(conn, clock, purchase, HoldStatus.COMMITTED)
    elif changed.status == "cancelled":
        await _settle_hold(conn, clock, purchase, HoldStatus.RELEASED)


async def _settle_hold(
    conn: asyncpg.Connection, clock: Clock, purchase: Purchase, target: HoldStatus
) -> None:
    """What the saga does too, in case it has not: the inbox and the hold's own transitions
    make whichever comes second a no-op."""
    hold = await repository.load_hold(conn, purchase.order_id)
    if hold is None:
        if target is HoldStatus.RELEASED and purchase.points_to_redeem > 0:
            await release_hold(conn, clock, purchase.order_id)  # closes it to a late hold
        return
    if hold.status is HoldStatus.HELD:
        await _move_hold(conn, clock, purchase.order_id, target)
    elif hold.status is not target:
        log.warning(
            "order ended with its hold the other way",
            order_id=purchase.order_id,
            hold=hold.status.value,
        )


async def return_updated(
    conn: asyncpg.Connection, clock: Clock, policy: Policy, update: ReturnUpdated
) -> None:
    """Goods came back (a trial's lines sent back, or a return after completion): the first
    update of a return takes its units off what the order keeps; if the order has earned
    already, the points they earned are taken back."""
    purchase = await repository.load_purchase(conn, update.order_id, lock=True)
    if purchase is None or update.version <= purchase.order_version:
        return
    purchase.order_version = update.version
    counts = purchase.status is not PurchaseStatus.CANCELLED
    if not counts or await repository.return_known(conn, update.return_id):
        await repository.save_purchase(conn, purchase)
        return
    now = clock.now()
    units = purchase.take_back([(item.sku, item.quantity) for item in update.items])
    await repository.record_return(
        conn, update.return_id, purchase.order_id, update.kind, units, now
    )
    rule = policy.rule(purchase.market)
    reversal = purchase.reversal_due(rule)
    if not (reversal.points or reversal.qualifying):
        await repository.save_purchase(conn, purchase)
        return
    account = await repository.load_member(conn, purchase.member_id, lock=True)
    assert account is not None
    version = account.version
    taken = 0
    if reversal.points:
        taken = account.reverse(purchase.order_id, update.return_id, reversal.points, now)
    purchase.reversed(reversal, taken)
    await repository.save_purchase(conn, purchase)  # before the tier review counts it
    await _review_tier(conn, account, rule, now)
    await _save(conn, clock, account, version)
    await repository.refresh_schedule(conn, account.member_id, now)


# -- the jobs --


async def earn_due(conn: asyncpg.Connection, clock: Clock, policy: Policy, limit: int) -> int:
    """Orders whose return window has passed earn for what they kept, at the member's tier;
    the tier is then worked out again. Returns how many orders it looked at."""
    now = clock.now()
    order_ids = await repository.due_purchases(conn, now, limit)
    for order_id in order_ids:
        purchase = await repository.load_purchase(conn, order_id)
        assert purchase is not None
        account = await repository.load_member(conn, purchase.member_id, lock=True)
        assert account is not None
        version = account.version
        rule = policy.rule(purchase.market)
        tier = rule.tier_named(account.tier)
        earning = purchase.earn(rule, tier, now, policy.points_valid_months)
        await repository.save_purchase(conn, purchase)
        if earning.points:
            earned = Earned(
                earning.kept_value,
                purchase.currency,
                tier.name,
                earning.multiplier_percent,
                earning.expires_at,
            )
            account.earn(order_id, earning.points, earned, now)
        await _review_tier(conn, account, rule, now)
        await _save(conn, clock, account, version)
        await repository.refresh_schedule(conn, account.member_id, now)
    return len(order_ids)


async def expire_due(conn: asyncpg.Connection, clock: Clock, limit: int) -> int:
    """Accounts some of whose points have reached the end of their validity."""
    now = clock.now()
    accounts = await repository.members_due(conn, "next_expiry_at", now, limit)
    for account in accounts:
        version = account.version
        account.expire_due(await repository.expiring_net(conn, account.member_id, now), now)
        await _save(conn, clock, account, version)
        await repository.refresh_schedule(conn, account.member_id, now)
    return len(accounts)


async def review_tiers(conn: asyncpg.Connection, clock: Clock, policy: Policy, limit: int) -> int:
    """Accounts an earning of which has just left the 12 months that tiers count."""
    now = clock.now()
    accounts = await repository.members_due(conn, "tier_review_at", now, limit)
    for account in accounts:
        version = account.version
        await _review_tier(conn, account, policy.rule(account.market), now)
        await _save(conn, clock, account, version)
        await repository.refresh_schedule(conn, account.member_id, now)
    return len(accounts)


async def _review_tier(
    conn: asyncpg.Connection, account: Account, rule: MarketRule, now: datetime
) -> None:
    qualifying = await repository.qualifying_points(conn, account.member_id, now)
    account.change_tier(rule.tier_for(qualifying).name, qualifying, now)


# -- saving --


async def _save(conn: asyncpg.Connection, clock: Clock, account: Account, version: int) -> None:
    """The account's recorded changes: its row, its ledger and, as events, the outbox."""
    if not account.changes:
        return
    await repository.update_member(conn, account, version, clock.now())
    await repository.insert_changes(conn, account.member_id, account.changes)
    await add_to_outbox(
        conn,
        SOURCE,
        [
            OutboxMessage(
                event_of(account, change),
                aggregate_id=account.member_id,
                aggregate_version=change.version,
                correlation_id=change.order_id,
            )
            for change in account.changes
        ],
        clock,
    )
    account.changes.clear()


def event_of(account: Account, change: Change) -> Any:
    """The integration event of one recorded change."""
    common: dict[str, Any] = {
        "member_id": account.member_id,
        "customer_id": account.customer_id,
        "version": change.version,
    }
    figures: dict[str, Any] = {
        "points": change.points,
        "balance": change.balance,
        "held": change.held,
    }
    kind = change.kind
    if kind is Kind.TIER:
        return events.TierChanged(
            **common,
            tier=change.tier or "",
            previous_tier=change.previous_tier or "",
            qualifying_points=change.qualifying_points,
            brand_group=account.brand_group,
            market=account.market,
        )
    if kind is Kind.EXPIRE:
        return events.PointsExpired(**common, **figures)
    order_id = change.order_id or ""
    if kind is Kind.HOLD:
        return events.PointsHeld(**common, order_id=order_id, **figures)
    if kind is Kind.COMMIT:
        return events.PointsCommitted(**common, order_id=order_id, **figures)
    if kind is Kind.RELEASE:
        return events.PointsReleased(**common, order_id=order_id, **figures)
    if kind is Kind.REVERSE:
        return events.PointsReversed(
            **common,
            order_id=order_id,
            return_id=change.return_id or "",
            unrecovered=change.unrecovered,
            **figures,
        )
    assert kind is Kind.EARN
    assert change.earned is not None
    earned = change.earned
    return events.PointsEarned(
        **common,
        order_id=order_id,
        **figures,
        kept_value=earned.kept_value,
        currency=earned.currency,
        tier=earned.tier,
        multiplier_percent=earned.multiplier_percent,
        expires_at=earned.expires_at.isoformat(),
    )
