"""``omnistock bench orders``: orders placed per second, and how soon they are confirmed.

Inventory, pricing, payments (with the PSP simulator inside it: no latency, no declines) and
orders run as ``omnistock serve`` processes, each on a fresh schema of the run; the orders
service reads payments' decisions in a consumer group of the run. One channel sells ``skus``
SKUs, each stocked and priced. Every order has two lines of one unit, for one of many
customers, paid by card. In one run, each phase ``seconds`` long:
- ``pg_orders_per_s``: the baseline, ``clients`` connections inserting an order's rows (order,
  lines, history) and its outbox row straight into PostgreSQL, one transaction per order;
- ``self_reserving_orders_per_s``: orders placed (201) per second over HTTP by ``clients``
  concurrent clients, the orders reserving their lines themselves (after a short warm-up);
- ``orders_per_s``: the same, each order against a checkout reservation made beforehand, so
  that placing is what is timed; ``cpu_ms_per_order``: the CPU time each process used in that
  phase per order placed (the saga confirms orders meanwhile), the local stack's PostgreSQL
  and Kafka included when they run on this machine, a figure that the other work on a shared
  machine inflates far less than it does the rates; ``cores_busy``: how many cores they kept
  busy in that phase;
- ``confirm_p50_ms`` / ``confirm_p99_ms``: orders that reserve themselves offered at ``rate``
  per second, from each 201 to its ``confirmed`` event as the bench reads it from Kafka;
- ``sustained_orders_per_s``: the orders reserving themselves over the time from the start
  of their phase until the last of them was confirmed or cancelled: what the whole pipeline
  keeps up with (placing alone goes faster: the saga gives way while checkout is busy);
- ``steady_confirm_p50_ms`` / ``steady_confirm_p99_ms``: the same at ``steady_rate_per_s``,
  ``STEADY_SHARE`` of the sustained rate: the saga's latency when the machine keeps up, as on
  a deployment sized for its load; ``steady_cpu_ms_per_order``: the CPU time each process
  used in that phase per order, placing and the whole saga, beyond what it uses idle
  (``idle_cores``, the load generator left out, measured before any order);
- ``drained_s``: from the end of the load to the last order confirmed or cancelled; ``lost``:
  orders placed in any phase and neither confirmed nor cancelled ``LOST_AFTER_S`` after the
  load; ``oversold``: stock rows holding more than on hand, stock counters that disagree
  with the allocations and reservations behind them, SKUs with more units allocated than
  stocked. Both must be 0.
Between phases the saga is let finish what the last one placed, so that no phase pays for the
one before.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import orjson
from rich.progress import Progress

from omnistock.bench.common import (
    broker_warmth,
    console,
    drop_schema,
    fresh_schema,
    percentile,
    report,
    run_id,
)
from omnistock.bench.orders.client import LoadClient
from omnistock.bench.orders.cpu import (
    costed_open_loop,
    deployment_ms,
    idle_cpu_ms_per_s,
    per_order,
    used_between,
)
from omnistock.bench.orders.load import (
    LINES,
    Body,
    Outcomes,
    closed_loop,
    open_loop,
    order_body,
)
from omnistock.bench.orders.stack import CHANNEL, Stack, seed, started, stock_check
from omnistock.contracts.orders import OrderLine, OrderPlaced
from omnistock.platform import db, events
from omnistock.platform.clock import SystemClock
from omnistock.platform.settings import Settings, get_settings

RATE, CLIENTS, SKUS = 200.0, 32, 2_000
# The steady phase offers this share of the rate the whole pipeline sustained.
STEADY_SHARE = 0.6
SETTLE_S = 60.0  # between phases: what is left then only slows the next one down
# An order neither confirmed nor cancelled this long after the load ended counts as lost: long
# enough for a saga that fell behind the offered rate on a small machine to catch up.
LOST_AFTER_S = 180.0
WARM_UP_S = 2.0
RESERVING_CLIENTS = 32
# Checkout reservations made before the timed phase, for this many times what the orders
# reserving themselves reached (placing a reserved order costs less): the phase ends early
# should they run out.
RESERVATIONS_AHEAD, MIN_RESERVATIONS = 3.0, 500


@dataclass(frozen=True, slots=True)
class Options:
    seconds: float
    rate: float
    clients: int
    skus: int


def run(
    *,
    as_json: bool,
    seconds: float,
    rate: float | None = None,
    clients: int | None = None,
    skus: int | None = None,
) -> None:
    options = Options(seconds, rate or RATE, clients or CLIENTS, skus or SKUS)
    warmth = broker_warmth()
    result = asyncio.run(_run(get_settings(), options))
    report({**result, **warmth}, as_json)


async def _run(settings: Settings, options: Options) -> dict[str, Any]:
    rid = run_id()
    console.print(f"[bold]services[/bold]: inventory, pricing, payments, orders ({rid})")
    async with started(settings, rid) as stack:
        console.print(f"[bold]seed[/bold]: {options.skus:,} SKUs stocked and priced")
        await seed(stack, options.skus)
        console.print(f"[bold]PostgreSQL[/bold]: order rows and outbox, {options.clients} clients")
        pg_rate = await _pg_baseline(settings, rid, options)
        outcomes = Outcomes(settings)
        outcomes.start()
        try:
            result = await _drive(stack, options, outcomes)
        finally:
            outcomes.stop()
        result.update(await stock_check(settings, stack.schemas["inventory"]))
        unsettled = outcomes.unsettled()
        if unsettled:
            result["unsettled_statuses"] = await _statuses(
                settings, stack.schemas["orders"], unsettled
            )
    ended = outcomes.settled()
    return {
        "bench": "orders",
        "orders_per_s": result["orders_per_s"],
        "placed_with": "checkout reservations made beforehand",
        "self_reserving_orders_per_s": result["self_reserving_orders_per_s"],
        "pg_orders_per_s": round(pg_rate, 1),
        "ratio": round(result["orders_per_s"] / pg_rate, 3),
        **result,
        "clients": options.clients,
        "skus": options.skus,
        "placed": len(outcomes.replied),
        "confirmed": ended["confirmed"],
        "cancelled": ended["cancelled"],
        "confirmed_units": ended["confirmed"] * LINES,
        "lost": len(outcomes.unsettled()),
    }


async def _drive(stack: Stack, options: Options, outcomes: Outcomes) -> dict[str, Any]:
    rng = random.Random(7)
    headers = stack.token("bench-storefront", ["orders:write", "orders:read", "inventory:reserve"])
    client = LoadClient(stack.urls["orders"], headers)
    endless = (order_body(rng, options.skus) for _ in itertools.count())
    idle = await idle_cpu_ms_per_s(stack)
    try:
        # Connections, caches and prepared statements of every service, not measured.
        await closed_loop(client, endless, options.clients, WARM_UP_S, outcomes, "warm-up")
        await outcomes.settle(SETTLE_S, "saga catching up")
        # Its rate sizes the checkout phase's reservations.
        reserving = await closed_loop(
            client, endless, options.clients, options.seconds, outcomes, "placing, reserving"
        )
        caught_up_s = await outcomes.settle(SETTLE_S, "saga catching up")
        # Placed and confirmed: the phase's orders over the time until the last of them ended.
        # Placing alone goes faster, as the saga gives way to a busy checkout.
        sustained = len(reserving.placed) / (reserving.elapsed_s + caught_up_s)

        budget = max(MIN_RESERVATIONS, int(RESERVATIONS_AHEAD * reserving.per_s * options.seconds))
        console.print(f"[bold]checkout[/bold]: {budget:,} reservations made beforehand")
        bodies = [order_body(rng, options.skus) for _ in range(budget)]
        reserved = await _checkout(stack, headers, bodies)
        before = stack.cpu_ms()
        checkout = await closed_loop(
            client, iter(reserved), options.clients, options.seconds, outcomes, "placing"
        )
        used = stack.cpu_ms()
        await outcomes.settle(SETTLE_S, "saga catching up")

        # The saga's own latency, at a rate this machine keeps up with: what a deployment
        # sized for its load sees.
        steady_rate = round(STEADY_SHARE * sustained, 1)
        console.print(f"[bold]latency[/bold]: {steady_rate:g} orders/s for {options.seconds:g} s")
        steady, steady_cost = await costed_open_loop(
            stack,
            client,
            lambda: order_body(rng, options.skus),
            steady_rate,
            options.seconds,
            outcomes,
            idle,
            SETTLE_S,
        )

        console.print(f"[bold]latency[/bold]: {options.rate:g} orders/s for {options.seconds:g} s")
        timed = await open_loop(
            client,
            lambda: order_body(rng, options.skus),
            options.rate,
            options.seconds,
            outcomes,
            f"{options.rate:g}/s",
        )
        drained_s = await outcomes.settle(LOST_AFTER_S, "last orders settling")
    finally:
        await client.aclose()
    latencies = outcomes.confirm_latencies_ms(timed.placed)
    steady_latencies = outcomes.confirm_latencies_ms(steady.placed)
    refused: dict[str, int] = {}
    for tally in (reserving, checkout, steady, timed):
        for status, count in tally.refused.items():
            refused[str(status)] = refused.get(str(status), 0) + count
    return {
        "orders_per_s": round(checkout.per_s, 1),
        "self_reserving_orders_per_s": round(reserving.per_s, 1),
        "sustained_orders_per_s": round(sustained, 1),
        "place_p50_ms": round(percentile(checkout.latencies_ms, 0.5), 1),
        "place_p99_ms": round(percentile(checkout.latencies_ms, 0.99), 1),
        "checkout_phase_s": round(checkout.elapsed_s, 1),
        # The saga confirms orders meanwhile: its work is in these figures too.
        "cpu_ms_per_order": per_order(before, used, len(checkout.placed)),
        # Of the machine's cores, how many those processes kept busy in that phase.
        "cores_busy": round(
            sum(used_between(before, used).values()) / 1000 / max(checkout.elapsed_s, 1e-9), 2
        ),
        "rate_per_s": options.rate,
        "achieved_rate_per_s": round(timed.per_s, 1),
        "confirm_p50_ms": round(percentile(latencies, 0.5), 1),
        "confirm_p99_ms": round(percentile(latencies, 0.99), 1),
        "confirm_samples": len(latencies),
        "latency_orders": "reserving themselves",
        "steady_rate_per_s": steady_rate,
        "steady_achieved_rate_per_s": round(steady.per_s, 1),
        "steady_confirm_p50_ms": round(percentile(steady_latencies, 0.5), 1),
        "steady_confirm_p99_ms": round(percentile(steady_latencies, 0.99), 1),
        # Placing and the whole saga of an order (no phase gives way to another here): what an
        # order costs a deployment at that rate (less at higher ones: ``bench capacity``).
        "steady_cpu_ms_per_order": steady_cost,
        "idle_cores": round(deployment_ms(idle) / 1000, 2),
        # From the end of the load to the last order confirmed or cancelled.
        "drained_s": round(drained_s, 1),
        "lost_after_s": LOST_AFTER_S,
        "seconds": options.seconds,
        "refused": refused,
    }


async def _checkout(stack: Stack, headers: dict[str, str], bodies: list[Body]) -> list[Body]:
    """A reservation for each body, made as a storefront's checkout would; the bodies with
    their reservation's id."""
    queue = iter(bodies)
    reserved: list[Body] = []
    client = LoadClient(stack.urls["inventory"], headers)

    async def checkout() -> None:
        for body in queue:
            lines = [{"sku": line["sku"], "quantity": line["quantity"]} for line in body["lines"]]
            request = {"channel_id": CHANNEL, "lines": lines, "customer_id": body["customer_id"]}
            status, answer = await client.post(
                "/v1/reservations", orjson.dumps(request), {"Idempotency-Key": uuid.uuid4().hex}
            )
            if status == 201:
                reserved.append({**body, "reservation_id": orjson.loads(answer)["reservation_id"]})

    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("reserving", total=len(bodies))
            runners = asyncio.gather(*(checkout() for _ in range(RESERVING_CLIENTS)))
            while not runners.done():
                progress.update(task, completed=len(reserved))
                await asyncio.wait([runners], timeout=0.2)
            await runners
    finally:
        await client.aclose()
    return reserved


async def _pg_baseline(settings: Settings, rid: str, options: Options) -> float:
    """Orders per second PostgreSQL takes straight: each order's rows and its outbox row in a
    transaction, from ``clients`` connections, no HTTP and no checks."""
    schema = f"bench_orders_{rid}_pg"
    await fresh_schema(settings, schema, "orders", "omnistock.orders")
    pool = await db.create_pool(
        settings.database_url, schema, min_size=options.clients, max_size=options.clients
    )
    clock = SystemClock()
    sample = OrderPlaced(
        order_id=str(uuid.uuid4()),
        customer_id="customer-1",
        channel_id=CHANNEL,
        platform="web",
        version=1,
        status="placed",
        reservation_id=str(uuid.uuid4()),
        currency="PLN",
        total=4_000,
        lines=[OrderLine("SKU-000001", 1, 2_000), OrderLine("SKU-000002", 1, 2_000)],
        delivery="locker",
        payment_method="card",
        loyalty_points=0,
    )
    _, payload = events.encode(
        sample,
        source="/omnistock/orders",
        subject=sample.order_id,
        time=clock.now(),
        aggregate_version=1,
    )
    written = 0
    deadline = time.monotonic() + options.seconds

    async def client(number: int) -> None:
        nonlocal written
        rng = random.Random(number)
        while time.monotonic() < deadline:
            body = order_body(rng, options.skus)
            async with pool.acquire() as conn, conn.transaction():
                await _insert_order(conn, body, payload, clock)
            written += 1

    try:
        started_at = time.monotonic()
        await asyncio.gather(*(client(n) for n in range(options.clients)))
        elapsed = time.monotonic() - started_at
    finally:
        await pool.close()
        await drop_schema(settings, schema)
    return written / elapsed


async def _insert_order(
    conn: asyncpg.Connection, body: Body, payload: bytes, clock: SystemClock
) -> None:
    now = clock.now()
    order_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO orders (order_id, customer_id, channel_id, platform, currency, total,
               reservation_id, delivery, payment_method, payment_token, loyalty_points, status,
               version, step, step_started_at, next_attempt_at, confirm_by, placed_at,
               updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'card', 'tok_visa', 0, 'placed', 1,
                   'commit_reservation', $9, $9, $10, $9, $9)""",
        order_id,
        body["customer_id"],
        body["channel_id"],
        body["platform"],
        body["currency"],
        sum(line["unit_price"] for line in body["lines"]),
        uuid.uuid4(),
        body["delivery"],
        now,
        now + timedelta(minutes=15),
    )
    await conn.executemany(
        """INSERT INTO order_lines (order_id, line_number, sku, quantity, unit_price)
           VALUES ($1, $2, $3, $4, $5)""",
        [
            (order_id, n, line["sku"], line["quantity"], line["unit_price"])
            for n, line in enumerate(body["lines"])
        ],
    )
    await conn.execute(
        """INSERT INTO order_history (order_id, version, status, changed_at)
           VALUES ($1, 1, 'placed', $2)""",
        order_id,
        now,
    )
    await conn.execute(
        """INSERT INTO outbox (event_id, topic, message_key, payload)
           VALUES ($1, 'omnistock.bench.orders', $2, $3)""",
        uuid.uuid4(),
        str(order_id),
        payload,
    )


async def _statuses(settings: Settings, schema: str, order_ids: list[str]) -> dict[str, int]:
    """Where the orders not seen settled on Kafka stand in the orders database: still under
    way, or settled without their event reaching the topic."""
    conn = await db.connect(settings.database_url, schema)
    try:
        rows = await conn.fetch(
            """SELECT status, count(*) AS orders FROM orders
               WHERE order_id = ANY($1::uuid[]) GROUP BY status""",
            order_ids,
        )
    finally:
        await conn.close()
    return {row["status"]: row["orders"] for row in rows}
