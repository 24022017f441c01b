"""The baseline: the old shop as the case describes it, on MariaDB. Each channel sells from a
copy of the stock of its own, refreshed from the real stock every few minutes by a job; a sale
is one transaction that takes units off the channel's copy while the copy shows any; the real
stock per location goes down only when the order is fulfilled, and an order whose units are
no longer on any of its channel's shelves by then is cancelled for lack of stock. Store tills
and the WMS write the real stock directly, between two runs of the job.

The job copies the real stock as it is, so orders sold but not yet fulfilled are offered
again after each run of it, as the old shop did. ``Timing.subtract_open_orders`` gives a more
generous baseline whose job takes every open order off the copies: what that one oversells
comes only from copies going stale between two runs of the job.

Time is a virtual clock that moves with the demand, so the job's interval and the fulfilment
delay are simulated minutes and a day of trading replays in seconds."""

from __future__ import annotations

import heapq
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import pymysql
from pymysql.connections import Connection

from omnistock.sim.world import World

SCHEMA = (
    """CREATE TABLE stock (
        sku VARCHAR(64) NOT NULL,
        location_id VARCHAR(64) NOT NULL,
        on_hand INT NOT NULL,
        PRIMARY KEY (sku, location_id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE sourcing (
        channel_id VARCHAR(64) NOT NULL,
        location_id VARCHAR(64) NOT NULL,
        priority INT NOT NULL,
        safety_stock INT NOT NULL,
        PRIMARY KEY (channel_id, location_id)
    ) ENGINE=InnoDB""",
    """CREATE TABLE channel_stock (
        channel_id VARCHAR(64) NOT NULL,
        sku VARCHAR(64) NOT NULL,
        quantity INT NOT NULL,
        synced_at_s DOUBLE NOT NULL,
        PRIMARY KEY (channel_id, sku)
    ) ENGINE=InnoDB""",
    """CREATE TABLE orders (
        order_id INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
        demand_index INT NOT NULL UNIQUE,
        channel_id VARCHAR(64) NOT NULL,
        sku VARCHAR(64) NOT NULL,
        quantity INT NOT NULL,
        placed_at_s DOUBLE NOT NULL,
        due_at_s DOUBLE NOT NULL,
        status VARCHAR(16) NOT NULL DEFAULT 'open',
        closed_at_s DOUBLE NULL,
        KEY open_by_sku (status, sku)
    ) ENGINE=InnoDB""",
)

# The job: every copy becomes what the channel's locations hold above their safety stock
# (less, when generous, whatever open orders still have to take from the shelves).
SYNC = """
INSERT INTO channel_stock (channel_id, sku, quantity, synced_at_s)
SELECT c.channel_id, c.sku,
       GREATEST(0, SUM(GREATEST(0, st.on_hand - s.safety_stock))
                   - IF(%s, COALESCE((SELECT SUM(o.quantity) FROM orders o
                                      WHERE o.status = 'open' AND o.sku = c.sku), 0), 0)),
       %s
FROM channel_stock c
JOIN sourcing s ON s.channel_id = c.channel_id
JOIN stock st ON st.sku = c.sku AND st.location_id = s.location_id
GROUP BY c.channel_id, c.sku
ON DUPLICATE KEY UPDATE quantity = VALUES(quantity), synced_at_s = VALUES(synced_at_s)
"""


@dataclass(frozen=True, slots=True)
class Timing:
    """Simulated minutes: how often the job copies the stock, how long until an order ships;
    and whether the job knows about the orders still open."""

    sync_minutes: float = 5.0
    fulfil_after_minutes: float = 30.0
    subtract_open_orders: bool = False


@dataclass
class LegacyRun:
    """What the baseline did. ``orders`` maps the demand index of every accepted web order to
    ``fulfilled``, ``cancelled`` (for lack of stock) or ``open``."""

    orders: dict[int, str] = field(default_factory=dict)
    refused_at_checkout: int = 0
    store_sales: int = 0
    store_sales_refused: int = 0
    receipts: int = 0
    syncs: int = 0
    seconds: float = 0.0


def connect(url: str, database: str | None = None) -> Connection:
    """A connection from a ``mysql://user:password@host:port/database`` URL."""
    parts = urlsplit(url)
    return pymysql.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 3306,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        database=database if database is not None else parts.path.lstrip("/") or None,
        autocommit=False,
    )


@contextmanager
def scratch_database(url: str) -> Iterator[Connection]:
    """A database of this run's own beside the configured one, dropped afterwards: runs side
    by side never meet, and the monolith's real schema (which the bridge reads) is left alone."""
    base = urlsplit(url).path.lstrip("/") or "legacy"
    name = f"{base}_sim_{uuid.uuid4().hex[:8]}"
    admin = connect(url, database="")
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}`")
        conn = connect(url, database=name)
        try:
            yield conn
        finally:
            conn.close()
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


class LegacyShop:
    """The monolith's stock and order tables and what its code did with them, one transaction
    per request. The clock moves only through ``advance_to``."""

    def __init__(self, conn: Connection, world: World, timing: Timing) -> None:
        self.conn = conn
        self.world = world
        self.timing = timing
        self.now_s = 0.0
        self.next_sync_s = timing.sync_minutes * 60
        self.due: list[tuple[float, int]] = []  # (due at, order id), the fulfilment queue
        self.run = LegacyRun()

    def install(self) -> None:
        """The tables, the world's stock, and copies taken at the opening bell."""
        rows_by_table: dict[str, list[tuple[object, ...]]] = {
            "stock": [(sku, loc, units) for (sku, loc), units in self.world.stock.items()],
            "sourcing": [
                (channel.channel_id, loc, priority, safety)
                for channel in self.world.channels
                for loc, priority, safety in channel.sourcing
            ],
            "channel_stock": [
                (channel.channel_id, sku, 0, 0.0)
                for channel in self.world.channels
                for sku in self.world.skus
                if self.world.brand_of[sku] == channel.brand
            ],
        }
        with self.conn.cursor() as cursor:
            for statement in SCHEMA:
                cursor.execute(statement)
            for table, rows in rows_by_table.items():
                marks = ", ".join(["%s"] * len(rows[0]))
                cursor.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
        self.conn.commit()
        self._sync()

    def advance_to(self, at_s: float) -> None:
        """Run what falls due up to ``at_s``: fulfilments and the job, in time order."""
        while True:
            next_due = self.due[0][0] if self.due else float("inf")
            if min(next_due, self.next_sync_s) > at_s:
                break
            if next_due <= self.next_sync_s:
                self.now_s, order_id = heapq.heappop(self.due)
                self._fulfil(order_id)
            else:
                self.now_s = self.next_sync_s
                self._sync()
                self.next_sync_s += self.timing.sync_minutes * 60
        self.now_s = at_s

    def sell(self, demand_index: int, channel_id: str, sku: str, quantity: int) -> bool:
        """A web checkout: accepted when the channel's copy shows the units."""
        with self.conn.cursor() as cursor:
            taken = cursor.execute(
                """UPDATE channel_stock SET quantity = quantity - %s
                   WHERE channel_id = %s AND sku = %s AND quantity >= %s""",
                (quantity, channel_id, sku, quantity),
            )
            if not taken:
                self.conn.rollback()
                self.run.refused_at_checkout += 1
                return False
            due_s = self.now_s + self.timing.fulfil_after_minutes * 60
            cursor.execute(
                """INSERT INTO orders (demand_index, channel_id, sku, quantity, placed_at_s,
                                       due_at_s) VALUES (%s, %s, %s, %s, %s, %s)""",
                (demand_index, channel_id, sku, quantity, self.now_s, due_s),
            )
            order_id = cursor.lastrowid
        self.conn.commit()
        heapq.heappush(self.due, (due_s, order_id))
        return True

    def store_sale(self, location_id: str, sku: str, quantity: int) -> bool:
        """A till sells what is on the shelf, whether or not the web sold it meanwhile."""
        with self.conn.cursor() as cursor:
            sold = cursor.execute(
                """UPDATE stock SET on_hand = on_hand - %s
                   WHERE sku = %s AND location_id = %s AND on_hand >= %s""",
                (quantity, sku, location_id, quantity),
            )
        self.conn.commit()
        self.run.store_sales += 1
        self.run.store_sales_refused += 0 if sold else 1
        return bool(sold)

    def receive(self, location_id: str, sku: str, quantity: int) -> int:
        """A delivery booked in at the WMS, which then reports its absolute count: what was on
        the shelf plus what arrived."""
        with self.conn.cursor() as cursor:
            cursor.execute(
                "SELECT on_hand FROM stock WHERE sku = %s AND location_id = %s FOR UPDATE",
                (sku, location_id),
            )
            found = cursor.fetchone()
            counted = (found[0] if found else 0) + quantity
            cursor.execute(
                """INSERT INTO stock (sku, location_id, on_hand) VALUES (%s, %s, %s)
                   ON DUPLICATE KEY UPDATE on_hand = VALUES(on_hand)""",
                (sku, location_id, counted),
            )
        self.conn.commit()
        self.run.receipts += 1
        return counted

    def finish(self) -> LegacyRun:
        """Fulfil what is still open (the warehouse works through its backlog), then tally."""
        if self.due:
            self.advance_to(max(due for due, _ in self.due))
        with self.conn.cursor() as cursor:
            cursor.execute("SELECT demand_index, status FROM orders")
            self.run.orders = dict(cursor.fetchall())
        self.conn.commit()
        return self.run

    def _sync(self) -> None:
        with self.conn.cursor() as cursor:
            cursor.execute(SYNC, (self.timing.subtract_open_orders, self.now_s))
        self.conn.commit()
        self.run.syncs += 1

    def _fulfil(self, order_id: int) -> None:
        """Pick the order from its channel's locations in priority order, splitting it when
        no one location has it all; cancel it when the shelves together do not."""
        with self.conn.cursor() as cursor:
            cursor.execute(
                "SELECT channel_id, sku, quantity FROM orders WHERE order_id = %s", (order_id,)
            )
            found = cursor.fetchone()
            assert found is not None, f"order {order_id} went missing"
            channel_id, sku, quantity = found
            cursor.execute(
                """SELECT st.location_id, st.on_hand FROM sourcing s
                   JOIN stock st ON st.location_id = s.location_id AND st.sku = %s
                   WHERE s.channel_id = %s ORDER BY s.priority FOR UPDATE""",
                (sku, channel_id),
            )
            shelves = list(cursor.fetchall())
            whole = next((loc for loc, units in shelves if units >= quantity), None)
            picks = [(whole, quantity)] if whole else _split(shelves, quantity)
            if picks is None:
                status = "cancelled"
            else:
                status = "fulfilled"
                cursor.executemany(
                    """UPDATE stock SET on_hand = on_hand - %s
                       WHERE sku = %s AND location_id = %s""",
                    [(units, sku, loc) for loc, units in picks],
                )
            cursor.execute(
                "UPDATE orders SET status = %s, closed_at_s = %s WHERE order_id = %s",
                (status, self.now_s, order_id),
            )
        self.conn.commit()


def _split(shelves: list[tuple[str, int]], quantity: int) -> list[tuple[str, int]] | None:
    picks = []
    for location_id, units in shelves:
        take = min(units, quantity)
        if take > 0:
            picks.append((location_id, take))
            quantity -= take
    return picks if quantity == 0 else None


@contextmanager
def legacy_shop(url: str, world: World, timing: Timing) -> Iterator[LegacyShop]:
    """A fresh monolith, stocked with the world, gone afterwards."""
    started = time.monotonic()
    with scratch_database(url) as conn:
        shop = LegacyShop(conn, world, timing)
        shop.install()
        yield shop
        shop.run.seconds = time.monotonic() - started
