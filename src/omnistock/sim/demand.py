"""What the shoppers, stores and warehouses of a seeded world mean to do, as pure generators:
no I/O, no clock, nothing drawn from what the services answer. The same world and seed give the
same checkouts, product views and stock events, in the same order, however fast they are
sent and whatever becomes of them; so the cancellation experiment can replay the traffic
simulator's demand against another system, one checkout at a time.

Each stream draws from a random generator of its own (seeded with the seed and the stream's
name), so that sending more product views never changes which checkouts come."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from omnistock.sim.world import Market, World

PAYMENT_METHODS = (("card", 0.60), ("pay_later", 0.20), ("try_before_you_buy", 0.20))
# The PSP simulator's fixed behaviours: most cards pass, a few decline or decide later.
CARD_TOKENS = (("tok_visa", 0.95), ("tok_declined", 0.02), ("tok_async", 0.03))
DEFERRED_TOKENS = {"pay_later": "tok_paylater", "try_before_you_buy": "tok_tbyb"}
DELIVERIES = (("home", 0.55), ("store", 0.25), ("locker", 0.20))
PLATFORMS = (("web", 0.45), ("ios", 0.35), ("android", 0.20))
LINES_PER_CHECKOUT = ((1, 0.65), (2, 0.25), (3, 0.10))
CUSTOMERS_PER_MARKET = 5_000
# What a WMS count finds against the system's figure: mostly the same or a little more
# (returns shelved, receipts booked late), sometimes one unit less.
COUNT_DRIFTS = ((-1, 0.15), (0, 0.40), (1, 0.25), (3, 0.20))
LISTING_SIZE = 24  # SKUs on a category page
SALE_PERCENT = 70  # a flash sale's price, of the regular one


@dataclass(frozen=True, slots=True)
class Line:
    sku: str
    quantity: int
    unit_price: int  # what the customer saw, minor units of the market's currency


@dataclass(frozen=True, slots=True)
class Delivery:
    kind: str  # home | store | locker
    place: str | None = None  # the store's location id or the locker's point id


@dataclass(frozen=True, slots=True)
class Fate:
    """What the customer (and the goods) will do after the checkout, decided with it so that
    a replay meets the same intentions."""

    abandon: str | None  # the cart is left without an order: "release" it or let it "expire"
    cancel: bool  # the customer cancels right after placing the order
    keep: tuple[bool, ...]  # try before you buy: per line, kept or sent back
    return_first_line: bool  # after completion, one unit of the first line goes back
    sellable: bool  # goods coming back are fit to sell again
    delay: float  # 0..1: how slowly this customer, warehouse and carrier act


@dataclass(frozen=True, slots=True)
class Checkout:
    number: int  # position in the stream: 0, 1, 2, ...
    channel_id: str
    market: str
    country: str
    currency: str
    customer_id: str
    platform: str
    lines: tuple[Line, ...]
    payment_method: str  # card | pay_later | try_before_you_buy
    payment_token: str
    delivery: Delivery
    flash: bool  # one of the flash sale's crowd
    fate: Fate

    @property
    def total(self) -> int:
        return sum(line.quantity * line.unit_price for line in self.lines)


@dataclass(frozen=True, slots=True)
class FlashSale:
    """From checkout number ``start``, ``customers`` checkouts in a row all want one of the
    ``skus`` hot SKUs (the simulator sends them at once), right after each warehouse received
    ``drop`` units of each (``flash_drop``). The hot SKUs are on sale for the whole run, so
    their price is the sale price in every checkout."""

    start: int
    customers: int
    skus: int = 3
    drop: int = 8


@dataclass(frozen=True, slots=True)
class View:
    """A product page (one SKU) or a listing page (several) of a channel."""

    channel_id: str
    skus: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StockEvent:
    """A store sale (``delta`` −1), a warehouse receipt (``delta`` > 0), or a WMS count
    (``delta`` None) that finds ``drift`` units more or fewer than the system holds;
    ``resend`` repeats the location's previous count (a message delivered twice)."""

    kind: str  # store_sale | receipt | count
    location_id: str
    sku: str
    delta: int | None = None
    drift: int = 0
    resend: bool = False


def _stream(seed: int, name: str) -> random.Random:
    return random.Random(f"omnistock-sim:{seed}:{name}")


T = TypeVar("T")


def _pick(rng: random.Random, weighted: Sequence[tuple[T, float]]) -> T:
    point = rng.random() * sum(w for _, w in weighted)
    for value, weight in weighted:
        point -= weight
        if point < 0:
            return value
    return weighted[-1][0]


def _market_weights(world: World) -> list[tuple[Market, float]]:
    """Markets listed first are the bigger ones, as the case's home market is."""
    markets = list(dict.fromkeys(c.market for c in world.channels))
    return [(m, 1 / (i + 1) ** 0.6) for i, m in enumerate(markets)]


def _brands(world: World) -> list[str]:
    return list(dict.fromkeys(c.brand for c in world.channels))


def hot_skus(world: World, seed: int, count: int = 3) -> tuple[str, ...]:
    """The flash sale's SKUs, spread over the brands: among the most popular of those no store
    carries, so that only the warehouses' thin stock (and the drop) can be sold."""
    rng = _stream(seed, "hot")
    brands = _brands(world)
    in_stores = {sku for skus in store_ranges(world).values() for sku in skus}
    chosen: list[str] = []
    for n in range(count):
        brand = brands[n % len(brands)]
        ranked = [s for s in world.skus if world.brand_of[s] == brand and s not in chosen]
        candidates = [s for s in ranked if s not in in_stores][:100] or ranked
        chosen.append(rng.choice(candidates))
    return tuple(chosen)


def flash_drop(world: World, seed: int, flash: FlashSale) -> list[StockEvent]:
    """The receipts that come just before the crowd: ``drop`` units of each hot SKU at each
    warehouse."""
    warehouses = [x.location_id for x in world.locations if x.kind == "warehouse"]
    return [
        StockEvent("receipt", warehouse, sku, delta=flash.drop)
        for sku in hot_skus(world, seed, flash.skus)
        for warehouse in warehouses
    ]


def sale_price(world: World, sku: str, market: Market) -> int:
    """A hot SKU's price during the flash sale: 30 % off, still ending in 99."""
    regular = world.price(sku, market)
    return max(99, regular * SALE_PERCENT // 100 // 100 * 100 + 99) if regular > 199 else regular


def demand(
    world: World, seed: int, n: int | None = None, flash: FlashSale | None = None
) -> Iterator[Checkout]:
    """The checkouts shoppers intend, in order: ``n`` of them (None: without end)."""
    rng = _stream(seed, "checkouts")
    markets = _market_weights(world)
    brands = _brands(world)
    hot = hot_skus(world, seed, flash.skus) if flash else ()
    numbers = range(n) if n is not None else itertools.count()
    for number in numbers:
        crowd = flash is not None and flash.start <= number < flash.start + flash.customers
        market = _pick(rng, markets)
        if crowd:
            wanted = rng.choice(hot)
            brand = world.brand_of[wanted]
            units = {wanted: 1}
        else:
            brand = rng.choice(brands)
            units = _basket(world, rng, brand)
        lines = tuple(
            Line(sku, q, sale_price(world, sku, market) if sku in hot else world.price(sku, market))
            for sku, q in units.items()
        )
        method = _pick(rng, PAYMENT_METHODS)
        token = _pick(rng, CARD_TOKENS) if method == "card" else DEFERRED_TOKENS[method]
        yield Checkout(
            number=number,
            channel_id=f"{brand}-{market.code}",
            market=market.code,
            country=market.country,
            currency=market.currency,
            customer_id=f"cust-{market.code}-{rng.randrange(CUSTOMERS_PER_MARKET):05d}",
            platform=_pick(rng, PLATFORMS),
            lines=lines,
            payment_method=method,
            payment_token=token,
            delivery=_delivery(world, rng, market),
            flash=crowd,
            fate=_fate(rng, len(lines)),
        )


def _basket(world: World, rng: random.Random, brand: str) -> dict[str, int]:
    size = _pick(rng, LINES_PER_CHECKOUT)
    units: dict[str, int] = {}
    for _ in range(size * 4):  # popular SKUs come up twice: draw again, a few times at most
        sku = world.draw_sku(rng, brand)
        if sku not in units:
            units[sku] = 2 if rng.random() < 0.15 else 1
        if len(units) == size:
            break
    return units


def _delivery(world: World, rng: random.Random, market: Market) -> Delivery:
    kind = _pick(rng, DELIVERIES)
    stores = world.stores_of(market)
    lockers = [x for x in world.lockers if x.market == market]
    if kind == "store" and stores:
        return Delivery("store", rng.choice(stores).location_id)
    if kind == "locker" and lockers:
        return Delivery("locker", rng.choice(lockers).point_id)
    return Delivery("home")


def _fate(rng: random.Random, lines: int) -> Fate:
    left = rng.random()
    abandon = "release" if left < 0.06 else "expire" if left < 0.08 else None
    return Fate(
        abandon=abandon,
        cancel=abandon is None and rng.random() < 0.03,
        keep=tuple(rng.random() < 0.6 for _ in range(lines)),
        return_first_line=rng.random() < 0.10,
        sellable=rng.random() < 0.9,
        delay=rng.random(),
    )


def browsing(world: World, seed: int) -> Iterator[View]:
    """Product and listing pages, without end: three product pages to one listing."""
    rng = _stream(seed, "browsing")
    markets = _market_weights(world)
    brands = _brands(world)
    while True:
        market = _pick(rng, markets)
        brand = rng.choice(brands)
        channel_id = f"{brand}-{market.code}"
        if rng.random() < 0.75:
            yield View(channel_id, (world.draw_sku(rng, brand),))
        else:
            page = dict.fromkeys(world.draw_sku(rng, brand) for _ in range(LISTING_SIZE))
            yield View(channel_id, tuple(page))


def store_ranges(world: World) -> dict[str, list[str]]:
    """Per store, the SKUs it carries, most popular first."""
    rank = {sku: n for n, sku in enumerate(world.skus)}
    stores = {x.location_id for x in world.locations if x.kind == "store"}
    carried: dict[str, list[str]] = defaultdict(list)
    for sku, location_id in world.stock:
        if location_id in stores:
            carried[location_id].append(sku)
    return {loc: sorted(skus, key=rank.__getitem__) for loc, skus in sorted(carried.items())}


def stock_events(world: World, seed: int) -> Iterator[StockEvent]:
    """Tills and warehouses at work, without end: store sales (half), WMS counts (a third)
    and receipts of new stock."""
    rng = _stream(seed, "stock")
    ranges = store_ranges(world)
    stores = list(ranges)
    warehouses = [x.location_id for x in world.locations if x.kind == "warehouse"]
    brands = _brands(world)
    while True:
        roll = rng.random()
        if roll < 0.5 and stores:
            store = rng.choice(stores)
            carried = ranges[store]
            # Tills sell the popular lines more: a pick skewed to the head of the range.
            sku = carried[int(len(carried) * rng.random() ** 2)]
            yield StockEvent("store_sale", store, sku, delta=-1)
        elif roll < 0.85:
            sku = world.draw_sku(rng, rng.choice(brands))
            drift = _pick(rng, COUNT_DRIFTS)
            resend = rng.random() < 0.05
            yield StockEvent("count", rng.choice(warehouses), sku, drift=drift, resend=resend)
        else:
            sku = world.draw_sku(rng, rng.choice(brands))
            yield StockEvent("receipt", rng.choice(warehouses), sku, delta=rng.randrange(5, 21))


@dataclass(frozen=True, slots=True)
class Crowd:
    """The flash sale's moment: the drop lands at the warehouses, then every checkout of the
    crowd is sent at once."""

    drop: tuple[StockEvent, ...]
    checkouts: tuple[Checkout, ...]


Intention = View | Checkout | StockEvent | Crowd

SHARES = (("browse", 0.96), ("checkout", 0.012), ("stock", 0.028))
"""Arrivals by kind. A checkout brings about eight more calls (the product page, the
reservation, the order, the partners' steps), a count two: so about nine calls in ten are
page views."""


def intentions(
    world: World,
    seed: int,
    rate: float,
    shares: Sequence[tuple[str, float]] = SHARES,
    flash: FlashSale | None = None,
) -> Iterator[tuple[float, Intention]]:
    """Everything the traffic simulator sends, in order, without end: (seconds from the
    start, what) at Poisson times of ``rate`` per second, each a page view, a checkout or a
    stock event as ``shares`` have it; the flash sale's crowd as one ``Crowd``. Which
    checkouts come does not depend on ``rate`` or ``shares``, only on the seed."""
    checkouts = demand(world, seed, None, flash)
    views = browsing(world, seed)
    stock = stock_events(world, seed)
    for at, kind in arrivals(seed, rate, shares):
        if kind == "browse":
            yield at, next(views)
        elif kind == "stock":
            yield at, next(stock)
        else:
            checkout = next(checkouts)
            if not checkout.flash or flash is None:
                yield at, checkout
                continue
            crowd = (checkout, *(next(checkouts) for _ in range(flash.customers - 1)))
            yield at, Crowd(tuple(flash_drop(world, seed, flash)), crowd)


def arrivals(
    seed: int, rate: float, shares: Sequence[tuple[str, float]]
) -> Iterator[tuple[float, str]]:
    """An open-loop schedule: (seconds from the start, what arrives), a Poisson process at
    ``rate`` per second, each arrival's kind drawn by ``shares``."""
    rng = _stream(seed, "arrivals")
    at = 0.0
    while True:
        at += rng.expovariate(rate)
        yield at, _pick(rng, shares)
