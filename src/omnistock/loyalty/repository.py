"""The SQL of the loyalty service: member accounts and their ledger, holds, and purchases (orders
as the programme sees them).

Lock order, everywhere: the purchase row, then the member row, then the hold row. The jobs take
their rows with SKIP LOCKED and never wait for one another.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

import asyncpg

from omnistock.loyalty.domain import (
    Account,
    Change,
    Hold,
    HoldStatus,
    Kind,
    Line,
    Membership,
    Purchase,
    PurchaseStatus,
)


class ConcurrentUpdate(Exception):
    """The account changed since it was read: the version moved on."""


def new_id() -> str:
    return str(uuid.uuid4())


# -- members --

_FIGURES = ("tier", "version", "balance", "held", "earned", "spent", "reversed", "expired")


def _account(row: asyncpg.Record) -> Account:
    return Account(
        member_id=str(row["member_id"]),
        customer_id=row["customer_id"],
        brand_group=row["brand_group"],
        market=row["market"],
        **{name: row[name] for name in _FIGURES},
    )


async def open_account(
    conn: asyncpg.Connection, membership: Membership, tier: str, now: datetime
) -> None:
    """The account of ``membership``, opened with nothing in it unless it exists."""
    await conn.execute(
        """INSERT INTO members (member_id, customer_id, brand_group, market, tier, version,
               balance, held, earned, spent, reversed, expired, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, 0, 0, 0, 0, 0, 0, 0, $6, $6)
           ON CONFLICT ON CONSTRAINT members_one_per_group_and_market DO NOTHING""",
        new_id(),
        membership.customer_id,
        membership.brand_group,
        membership.market,
        tier,
        now,
    )


async def member_of(
    conn: asyncpg.Connection, membership: Membership, *, lock: bool = False
) -> Account | None:
    row = await conn.fetchrow(
        """SELECT * FROM members WHERE customer_id = $1 AND brand_group = $2 AND market = $3"""
        + (" FOR UPDATE" if lock else ""),
        membership.customer_id,
        membership.brand_group,
        membership.market,
    )
    return _account(row) if row else None


async def load_member(
    conn: asyncpg.Connection, member_id: str, *, lock: bool = False
) -> Account | None:
    row = await conn.fetchrow(
        "SELECT * FROM members WHERE member_id = $1" + (" FOR UPDATE" if lock else ""), member_id
    )
    return _account(row) if row else None


async def update_member(
    conn: asyncpg.Connection, account: Account, expected_version: int, now: datetime
) -> None:
    assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(_FIGURES, start=4))
    status = await conn.execute(
        f"UPDATE members SET updated_at = $3, {assignments} WHERE member_id = $1 AND version = $2",
        account.member_id,
        expected_version,
        now,
        *(getattr(account, name) for name in _FIGURES),
    )
    if status != "UPDATE 1":
        raise ConcurrentUpdate(
            f"member {account.member_id} is no longer version {expected_version}"
        )


async def insert_changes(conn: asyncpg.Connection, member_id: str, changes: list[Change]) -> None:
    """Ledger entries for the changes of points, tier rows for the moves of tier."""
    ledger = [c for c in changes if c.kind is not Kind.TIER]
    tiers = [c for c in changes if c.kind is Kind.TIER]
    if ledger:
        await conn.executemany(
            """INSERT INTO ledger (member_id, version, kind, points, balance_change,
                   held_change, balance, held, order_id, details, occurred_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
            [
                (
                    member_id,
                    c.version,
                    c.kind.value,
                    c.points,
                    c.balance_change,
                    c.held_change,
                    c.balance,
                    c.held,
                    c.order_id,
                    _details(c),
                    c.at,
                )
                for c in ledger
            ],
        )
    if tiers:
        await conn.executemany(
            """INSERT INTO tier_changes (member_id, version, tier, previous_tier,
                   qualifying_points, occurred_at)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            [
                (member_id, c.version, c.tier, c.previous_tier, c.qualifying_points, c.at)
                for c in tiers
            ],
        )


def _details(change: Change) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if change.return_id is not None:
        details["return_id"] = change.return_id
    if change.kind is Kind.REVERSE:
        details["unrecovered"] = change.unrecovered
    if change.earned is not None:
        details.update(asdict(change.earned))
        details["expires_at"] = change.earned.expires_at.isoformat()
    return details


async def ledger_of(
    conn: asyncpg.Connection, member_id: str, limit: int, before_version: int | None
) -> list[asyncpg.Record]:
    """The account's entries, newest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT * FROM ledger WHERE member_id = $1 AND ($2::bigint IS NULL OR version < $2)
           ORDER BY version DESC LIMIT $3""",
        member_id,
        before_version,
        limit,
    )
    return rows


async def member_row(conn: asyncpg.Connection, member_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM members WHERE member_id = $1", member_id
    )
    return row


async def members_of_customer(conn: asyncpg.Connection, customer_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM members WHERE customer_id = $1 ORDER BY brand_group, market", customer_id
    )
    return rows


async def orders_waiting_to_earn(conn: asyncpg.Connection, member_id: str) -> int:
    """How many completed orders wait for their return window to pass before they earn."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM purchases WHERE member_id = $1 AND status = 'scheduled'", member_id
    )
    return count


# -- what the jobs look at --


async def expiring_net(conn: asyncpg.Connection, member_id: str, now: datetime) -> int:
    """Every point the account earned (net of reversals) whose validity has ended by now."""
    total: int = await conn.fetchval(
        """SELECT coalesce(sum(points - points_reversed), 0)::bigint FROM purchases
           WHERE member_id = $1 AND status = 'earned' AND expires_at <= $2""",
        member_id,
        now,
    )
    return total


async def qualifying_points(conn: asyncpg.Connection, member_id: str, now: datetime) -> int:
    """Points qualified (before multipliers, net of returns) in the last 12 months."""
    total: int = await conn.fetchval(
        """SELECT coalesce(sum(qualifying - qualifying_reversed), 0)::bigint FROM purchases
           WHERE member_id = $1 AND status = 'earned'
             AND earned_at + interval '12 months' > $2""",
        member_id,
        now,
    )
    return total


async def refresh_schedule(conn: asyncpg.Connection, member_id: str, now: datetime) -> None:
    """When the account needs a look next: the first of its points to expire, and the first
    moment an earning leaves the tier window (its tier may fall then)."""
    await conn.execute(
        """UPDATE members SET
               next_expiry_at = (
                   SELECT min(expires_at) FROM purchases
                   WHERE member_id = $1 AND status = 'earned' AND expires_at > $2
                     AND points > points_reversed),
               tier_review_at = (
                   SELECT min(earned_at + interval '12 months') FROM purchases
                   WHERE member_id = $1 AND status = 'earned'
                     AND earned_at + interval '12 months' > $2
                     AND qualifying > qualifying_reversed)
           WHERE member_id = $1""",
        member_id,
        now,
    )


async def expire_soon_if_overdue(conn: asyncpg.Connection, member_id: str, now: datetime) -> None:
    """Points released from a hold may belong to an earning that has expired meanwhile: the
    expiry job looks at the account again at once."""
    await conn.execute(
        """UPDATE members SET next_expiry_at = $2
           WHERE member_id = $1 AND EXISTS (
               SELECT 1 FROM purchases
               WHERE member_id = $1 AND status = 'earned' AND expires_at <= $2)""",
        member_id,
        now,
    )


async def members_due(
    conn: asyncpg.Connection, column: str, now: datetime, limit: int
) -> list[Account]:
    """Accounts whose ``column`` (next_expiry_at, tier_review_at) has come, locked; those
    another replica holds are left to it."""
    if column not in ("next_expiry_at", "tier_review_at"):
        raise ValueError(column)
    rows = await conn.fetch(
        f"""SELECT * FROM members WHERE {column} <= $1
            ORDER BY {column} LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )
    return [_account(row) for row in rows]


# -- holds --


def _hold(row: asyncpg.Record) -> Hold:
    member = row["member_id"]
    return Hold(
        row["order_id"], str(member) if member else None, row["points"], HoldStatus(row["status"])
    )


async def load_hold(conn: asyncpg.Connection, order_id: str, *, lock: bool = False) -> Hold | None:
    row = await conn.fetchrow(
        "SELECT * FROM holds WHERE order_id = $1" + (" FOR UPDATE" if lock else ""), order_id
    )
    return _hold(row) if row else None


async def insert_hold(conn: asyncpg.Connection, hold: Hold, now: datetime) -> bool:
    """False when the order has a hold already (one written since it was looked for)."""
    status = await conn.execute(
        """INSERT INTO holds (order_id, member_id, points, status, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (order_id) DO NOTHING""",
        hold.order_id,
        hold.member_id,
        hold.points,
        hold.status.value,
        now,
    )
    return bool(status == "INSERT 0 1")


async def update_hold(conn: asyncpg.Connection, hold: Hold, now: datetime) -> None:
    await conn.execute(
        "UPDATE holds SET status = $2, updated_at = $3 WHERE order_id = $1",
        hold.order_id,
        hold.status.value,
        now,
    )


async def hold_row(conn: asyncpg.Connection, order_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        """SELECT h.*, m.customer_id FROM holds h LEFT JOIN members m USING (member_id)
           WHERE h.order_id = $1""",
        order_id,
    )
    return row


# -- purchases --


async def insert_purchase(
    conn: asyncpg.Connection, purchase: Purchase, placed_at: datetime
) -> bool:
    """False when the order is known already."""
    status = await conn.execute(
        """INSERT INTO purchases (order_id, member_id, currency, market, status, order_version,
               points_to_redeem, placed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (order_id) DO NOTHING""",
        purchase.order_id,
        purchase.member_id,
        purchase.currency,
        purchase.market,
        purchase.status.value,
        purchase.order_version,
        purchase.points_to_redeem,
        placed_at,
    )
    if status != "INSERT 0 1":
        return False
    await conn.executemany(
        """INSERT INTO purchase_lines (order_id, line, sku, quantity, unit_price, returned)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        [
            (purchase.order_id, n, x.sku, x.quantity, x.unit_price, x.returned)
            for n, x in enumerate(purchase.lines)
        ],
    )
    return True


_PURCHASE_STATE = (
    "status",
    "order_version",
    "completed_at",
    "earn_at",
    "points",
    "qualifying",
    "multiplier_percent",
    "points_reversed",
    "points_unrecovered",
    "qualifying_reversed",
    "earned_at",
    "expires_at",
)


async def load_purchase(
    conn: asyncpg.Connection, order_id: str, *, lock: bool = False
) -> Purchase | None:
    row = await conn.fetchrow(
        "SELECT * FROM purchases WHERE order_id = $1" + (" FOR UPDATE" if lock else ""), order_id
    )
    if row is None:
        return None
    lines = await conn.fetch(
        "SELECT * FROM purchase_lines WHERE order_id = $1 ORDER BY line", order_id
    )
    state = {name: row[name] for name in _PURCHASE_STATE}
    state["status"] = PurchaseStatus(row["status"])
    return Purchase(
        order_id=row["order_id"],
        member_id=str(row["member_id"]),
        currency=row["currency"],
        market=row["market"],
        lines=[Line(x["sku"], x["quantity"], x["unit_price"], x["returned"]) for x in lines],
        points_to_redeem=row["points_to_redeem"],
        **state,
    )


async def save_purchase(conn: asyncpg.Connection, purchase: Purchase) -> None:
    assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(_PURCHASE_STATE, start=2))
    values = [getattr(purchase, name) for name in _PURCHASE_STATE]
    values[0] = purchase.status.value
    await conn.execute(
        f"UPDATE purchases SET {assignments} WHERE order_id = $1", purchase.order_id, *values
    )
    await conn.executemany(
        "UPDATE purchase_lines SET returned = $3 WHERE order_id = $1 AND line = $2",
        [(purchase.order_id, n, x.returned) for n, x in enumerate(purchase.lines)],
    )


async def record_return(
    conn: asyncpg.Connection, return_id: str, order_id: str, kind: str, units: int, now: datetime
) -> None:
    await conn.execute(
        """INSERT INTO purchase_returns (return_id, order_id, kind, units, recorded_at)
           VALUES ($1, $2, $3, $4, $5)""",
        return_id,
        order_id,
        kind,
        units,
        now,
    )


async def return_known(conn: asyncpg.Connection, return_id: str) -> bool:
    found = await conn.fetchval("SELECT 1 FROM purchase_returns WHERE return_id = $1", return_id)
    return found is not None


async def due_purchases(conn: asyncpg.Connection, now: datetime, limit: int) -> list[str]:
    """Completed orders whose return window has passed, locked; others' are left to them."""
    rows = await conn.fetch(
        """SELECT order_id FROM purchases WHERE status = 'scheduled' AND earn_at <= $1
           ORDER BY earn_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now,
        limit,
    )
    return [row["order_id"] for row in rows]
