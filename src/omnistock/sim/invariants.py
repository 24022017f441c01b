"""The invariant checker: what must hold after any crash, cut or slow link, read as an auditor
would from the services' own schemas (one consistent snapshot per schema) and the apps' public
API. Under traffic it tolerates what is legitimately in flight; ``settled`` (traffic stopped,
the flow drained) it tolerates nothing.

- every accepted order is terminal or waiting for someone outside the platform (a shipment, a
  delivery, a pickup, a trial answer); none is mid-saga beyond its retry window, due with no
  worker taking it, or mid-saga with no step at all;
- no oversell: reserved + allocated <= on_hand for every SKU and location, and both counters
  equal the active reservation lines and open allocations they stand for;
- the stock ledger (movements) sums to on_hand for every SKU and location;
- no reservation is still active past its TTL plus the sweeper's interval;
- a completed order captured exactly the value of the lines kept (less refunded returns), a
  cancelled one captured nothing;
- customer-sync shows every order of the run at the status of the version it holds, and holds
  at least the version the order had when the check began, once it has read that far;
- a collection point's occupied slots are its live bookings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from omnistock.inventory.api.schemas import InventorySettings
from omnistock.orders.settings import OrdersSettings
from omnistock.sim.flow import Flow, Schemas

EXAMPLES = 5
API_SAMPLE = 10  # orders whose card is also read through the public API
CUSTOMER_SYNC_GROUP = "OMNISTOCK_CUSTOMER_SYNC_GROUP"
FORWARD = ("placed", "allocated", "authorized")
# States in which something inside the platform must be working on the order.
NEEDS_A_STEP = (*FORWARD, "cancelling", "delivered", "collected")


@dataclass
class Violation:
    invariant: str
    detail: str
    count: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "invariant": self.invariant,
            "detail": self.detail,
            "count": self.count,
            "examples": self.examples,
        }


@dataclass
class Verdict:
    checked: dict[str, int] = field(default_factory=dict)  # what was looked at, how many
    violations: list[Violation] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations

    def flag(self, invariant: str, detail: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            self.violations.append(Violation(invariant, detail, len(rows), rows[:EXAMPLES]))

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "violations": [v.as_dict() for v in self.violations],
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True, slots=True)
class Windows:
    """How long things may legitimately take, from the services' own settings."""

    retry_window_s: float  # a forward saga step, every retry included
    due_slack_s: float  # a due step not yet taken by a worker
    leak_after_s: float  # past a reservation's expiry: the sweeper's interval and some

    @classmethod
    def from_settings(cls) -> Windows:
        orders = OrdersSettings()
        policy = orders.retry_policy()
        backoff = sum(policy.delay(n).total_seconds() for n in range(1, policy.max_attempts + 1))
        calls = policy.max_attempts * orders.step_timeout_s
        slack = orders.lease.total_seconds() + 5 * orders.worker_interval_s
        sweep = InventorySettings().sweep_interval_s
        return cls(backoff + calls + slack, slack, sweep + 2.0)


def _rows(records: list[Any]) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in dict(r).items()} for r in records]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)


@dataclass
class Checker:
    schemas: Schemas
    flow: Flow
    windows: Windows = field(default_factory=Windows.from_settings)
    catch_up_s: float = 30.0

    async def check(self, settled: bool = False) -> Verdict:
        started = time.monotonic()
        verdict = Verdict()
        present = set(self.schemas.services)  # a fleet may run without some services
        if "inventory" in present:
            await self._stock(verdict)
        if "orders" in present:
            orders, instant = await self._orders(verdict, settled)
            if "payments" in present:
                await self._payments(verdict, orders)
            if "customer-sync" in present:
                await self._timelines(verdict, orders, instant)
        if "collection-points" in present:
            await self._slots(verdict)
        verdict.seconds = time.monotonic() - started
        return verdict

    # -- inventory --

    async def _stock(self, verdict: Verdict) -> None:
        async with self.schemas.snapshot("inventory") as conn:
            verdict.checked["stock rows"] = await conn.fetchval("SELECT count(*) FROM stock")
            oversold = await conn.fetch(
                """SELECT sku, location_id, on_hand, reserved, allocated FROM stock
                   WHERE reserved + allocated > on_hand ORDER BY sku, location_id"""
            )
            counters = await conn.fetch(
                """WITH held AS (
                       SELECT l.sku, l.location_id, sum(l.quantity) AS units
                       FROM reservation_lines l JOIN reservations r USING (reservation_id)
                       WHERE r.status = 'active' GROUP BY 1, 2),
                   open AS (
                       SELECT sku, location_id, sum(quantity) AS units
                       FROM allocations WHERE status = 'allocated' GROUP BY 1, 2)
                   SELECT sku, location_id,
                          coalesce(s.reserved, 0) AS reserved, coalesce(h.units, 0) AS held,
                          coalesce(s.allocated, 0) AS allocated, coalesce(o.units, 0) AS open
                   FROM stock s FULL JOIN held h USING (sku, location_id)
                        FULL JOIN open o USING (sku, location_id)
                   WHERE coalesce(s.reserved, 0) <> coalesce(h.units, 0)
                      OR coalesce(s.allocated, 0) <> coalesce(o.units, 0)
                   ORDER BY sku, location_id"""
            )
            ledger = await conn.fetch(
                """SELECT sku, location_id, s.on_hand, m.units AS movements
                   FROM stock s FULL JOIN (
                       SELECT sku, location_id, sum(quantity) AS units
                       FROM stock_movements GROUP BY 1, 2) m USING (sku, location_id)
                   WHERE coalesce(s.on_hand, 0) <> coalesce(m.units, 0)
                   ORDER BY sku, location_id"""
            )
            verdict.checked["reservations"] = await conn.fetchval(
                "SELECT count(*) FROM reservations"
            )
            leaked = await conn.fetch(
                """SELECT reservation_id, channel_id, expires_at,
                          extract(epoch FROM now() - expires_at)::int AS overdue_s
                   FROM reservations
                   WHERE status = 'active' AND expires_at < now() - make_interval(secs => $1)
                   ORDER BY expires_at""",
                self.windows.leak_after_s,
            )
        verdict.flag("no_oversell", "reserved + allocated above on_hand", _rows(oversold))
        verdict.flag(
            "stock_counters_match",
            "reserved or allocated differ from the active reservation lines or open allocations",
            _rows(counters),
        )
        verdict.flag(
            "ledger_sums_to_on_hand", "the movements do not add up to on_hand", _rows(ledger)
        )
        verdict.flag(
            "no_leaked_reservations",
            f"active more than {self.windows.leak_after_s:.0f} s past their expiry",
            _rows(leaked),
        )

    # -- orders --

    async def _orders(self, verdict: Verdict, settled: bool) -> tuple[list[Any], datetime]:
        async with self.schemas.snapshot("orders") as conn:
            instant: datetime = await conn.fetchval("SELECT now()")
            orders = await conn.fetch(
                """SELECT o.order_id::text AS order_id, o.customer_id, o.status, o.version,
                          (SELECT coalesce(sum(l.quantity * l.unit_price), 0) FROM order_lines l
                           WHERE l.order_id = o.order_id
                             AND l.decision IS DISTINCT FROM 'return') AS kept,
                          (SELECT coalesce(sum(r.refund_amount), 0) FROM order_returns r
                           WHERE r.order_id = o.order_id AND r.kind = 'rma'
                             AND r.status = 'settled') AS refunded,
                          EXISTS (SELECT FROM order_returns r WHERE r.order_id = o.order_id
                                  AND r.status <> 'settled') AS returning
                   FROM orders o"""
            )
            # Settled, nothing may still be on its way; under traffic, within its window.
            window = 0.0 if settled else self.windows.retry_window_s
            stuck = await conn.fetch(
                """SELECT order_id::text AS order_id, status, step, step_attempts,
                          step_started_at, next_attempt_at, leased_until, last_error
                   FROM orders
                   WHERE status <> 'cancelled' AND (
                       (step IS NOT NULL
                        AND next_attempt_at < now() - make_interval(secs => $1)
                        AND (leased_until IS NULL
                             OR leased_until < now() - make_interval(secs => $1)))
                    OR (status = ANY($2::text[]) AND step IS NULL)
                    OR (status = ANY($3::text[])
                        AND step_started_at < now() - make_interval(secs => $4)))
                   ORDER BY placed_at""",
                self.windows.due_slack_s,
                list(NEEDS_A_STEP),
                list(FORWARD),
                window,
            )
        verdict.checked["orders"] = len(orders)
        verdict.flag(
            "orders_not_stuck",
            "mid-saga beyond the retry window, due and not taken, or with no step to move on",
            _rows(stuck),
        )
        return orders, instant

    async def _payments(self, verdict: Verdict, orders: list[Any]) -> None:
        ended = {o["order_id"]: o for o in orders if o["status"] in ("completed", "cancelled")}
        async with self.schemas.snapshot("payments") as conn:
            money = {
                r["order_id"]: r
                for r in await conn.fetch(
                    """SELECT order_id, sum(captured) AS captured, sum(refunded) AS refunded,
                              sum(capture_pending) AS pending
                       FROM payments WHERE order_id = ANY($1::text[]) GROUP BY order_id""",
                    list(ended),
                )
            }
        wrong, taken = [], []
        for order_id, order in ended.items():
            paid = money.get(order_id)
            captured = int(paid["captured"]) if paid else 0
            net = captured - (int(paid["refunded"]) if paid else 0)
            pending = int(paid["pending"]) if paid else 0
            if order["status"] == "cancelled" and (captured or pending):
                taken.append({"order_id": order_id, "captured": captured, "pending": pending})
            expected = int(order["kept"]) - int(order["refunded"])
            completed = order["status"] == "completed" and not order["returning"]
            if completed and (net != expected or pending):
                wrong.append(
                    {"order_id": order_id, "expected": expected, "net_captured": net}
                    | {"pending": pending}
                )
        verdict.checked["ended orders"] = len(ended)
        verdict.flag(
            "captures_match_kept_lines",
            "a completed order's captures (less refunds) differ from the lines it kept",
            wrong,
        )
        verdict.flag(
            "nothing_captured_for_cancelled", "a cancelled order had money captured", taken
        )

    # -- customer-sync --

    async def _timelines(self, verdict: Verdict, orders: list[Any], instant: datetime) -> None:
        """Once customer-sync has read every order event written up to ``instant``."""
        group = self.flow.fleet.group(CUSTOMER_SYNC_GROUP)
        drained = await self.flow.outbox_drained_until("orders", instant, self.catch_up_s)
        if not drained or not await self.flow.group_caught_up(group, self.catch_up_s):
            verdict.flag(
                "timelines_match_orders",
                f"customer-sync did not catch up within {self.catch_up_s:.0f} s",
                [{"orders_outbox_drained": drained}],
            )
            return
        ids = [o["order_id"] for o in orders]
        async with self.schemas.snapshot("customer-sync") as conn:
            entries = {
                r["entity_id"]: r
                for r in await conn.fetch(
                    """SELECT entity_id, version, fields -> 'status' ->> 1 AS status
                       FROM entries WHERE kind = 'order' AND entity_id = ANY($1::text[])""",
                    ids,
                )
            }
        async with self.schemas.connection("orders") as conn:
            history = {
                (r["order_id"], r["version"]): r["status"]
                for r in await conn.fetch(
                    """SELECT order_id::text AS order_id, version, status FROM order_history
                       WHERE order_id = ANY($1::uuid[])""",
                    ids,
                )
            }
        apart = []
        for order in orders:
            entry = entries.get(order["order_id"])
            shown = {"order_id": order["order_id"], "status": order["status"]}
            shown["version"] = order["version"]
            if entry is None:
                apart.append({**shown, "timeline": None})
                continue
            at_version = history.get((order["order_id"], entry["version"]))
            behind = entry["version"] <= order["version"] and entry["status"] != order["status"]
            if at_version != entry["status"] or behind:
                apart.append(
                    {**shown, "timeline_status": entry["status"]}
                    | {"timeline_version": entry["version"], "history_status": at_version}
                )
        verdict.checked["timelines"] = len(entries)
        verdict.flag(
            "timelines_match_orders",
            "customer-sync shows a status the order did not have at that version, or is behind",
            apart,
        )
        sample = [entries[o] for o in ids[-API_SAMPLE:] if o in entries]
        by_id = {o["order_id"]: o for o in orders}
        verdict.flag(
            "apps_show_the_timeline",
            "the public timeline API answers another status or version than customer-sync holds",
            await self._cards_differing(sample, by_id),
        )

    async def _cards_differing(
        self, entries: list[Any], orders: dict[str, Any]
    ) -> list[dict[str, Any]]:
        fleet = self.flow.fleet
        headers = fleet.headers("drill-auditor", ["customer-sync:read"])
        differing = []
        async with httpx.AsyncClient(base_url=fleet.url("customer-sync"), timeout=5) as client:
            for entry in entries:
                order = orders[entry["entity_id"]]
                path = f"/v1/customers/{order['customer_id']}/orders/{order['order_id']}"
                try:
                    answer = await client.get(path, headers=headers)
                except httpx.HTTPError as exc:
                    differing.append({"order_id": order["order_id"], "error": repr(exc)})
                    continue
                card = answer.json() if answer.status_code == 200 else {}
                shown = (card.get("status"), card.get("version"))
                # The card may have moved on since the view was read, never back.
                if (
                    shown[1] is None
                    or shown[1] < entry["version"]
                    or (shown[1] == entry["version"] and shown[0] != entry["status"])
                ):
                    differing.append(
                        {"order_id": order["order_id"], "http_status": answer.status_code}
                        | {"card": shown, "view": (entry["status"], entry["version"])}
                    )
        return differing

    # -- collection points --

    async def _slots(self, verdict: Verdict) -> None:
        async with self.schemas.snapshot("collection-points") as conn:
            wrong = await conn.fetch(
                """SELECT p.point_id, p.occupied,
                          count(b.booking_id) FILTER (WHERE b.status IN ('booked', 'arrived'))
                              AS live
                   FROM points p LEFT JOIN bookings b USING (point_id)
                   GROUP BY p.point_id, p.occupied
                   HAVING p.occupied <> count(b.booking_id)
                              FILTER (WHERE b.status IN ('booked', 'arrived'))"""
            )
            verdict.checked["points"] = await conn.fetchval("SELECT count(*) FROM points")
        verdict.flag(
            "slots_match_bookings", "occupied slots differ from live bookings", _rows(wrong)
        )
