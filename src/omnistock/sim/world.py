"""A seeded retail world like the case's fashion group: brands sold in 19 markets (a channel is
brand × market), three regional warehouses and stores in every country sharing stock, a
catalogue with a long-tail popularity, prices in each market's currency, parcel lockers. The
same seed gives the same world, to the last unit and cent."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Market:
    code: str  # lower case, the channel's suffix
    country: str
    currency: str
    vat_bp: int
    # Minor units of the currency per 100 euro cents, for prices that look local.
    per_euro_cent: tuple[int, int]
    region: str  # the warehouse that serves it first
    timezone: str
    lat_e6: int
    lon_e6: int


MARKETS = (
    Market("pl", "PL", "PLN", 2300, (43, 10), "east", "Europe/Warsaw", 52_229_676, 21_012_229),
    Market("cz", "CZ", "CZK", 2100, (25, 1), "east", "Europe/Prague", 50_075_538, 14_437_800),
    Market("sk", "SK", "EUR", 2300, (1, 1), "east", "Europe/Bratislava", 48_148_598, 17_107_748),
    Market("hu", "HU", "HUF", 2700, (39, 1), "east", "Europe/Budapest", 47_497_912, 19_040_235),
    Market("ro", "RO", "RON", 1900, (5, 1), "east", "Europe/Bucharest", 44_426_767, 26_102_538),
    Market("bg", "BG", "BGN", 2000, (2, 1), "east", "Europe/Sofia", 42_697_708, 23_321_868),
    Market("lt", "LT", "EUR", 2100, (1, 1), "east", "Europe/Vilnius", 54_687_156, 25_279_651),
    Market("lv", "LV", "EUR", 2100, (1, 1), "east", "Europe/Riga", 56_949_649, 24_105_186),
    Market("de", "DE", "EUR", 1900, (1, 1), "central", "Europe/Berlin", 52_520_008, 13_404_954),
    Market("at", "AT", "EUR", 2000, (1, 1), "central", "Europe/Vienna", 48_208_174, 16_373_819),
    Market("ch", "CH", "CHF", 810, (95, 100), "central", "Europe/Zurich", 47_376_887, 8_541_694),
    Market("nl", "NL", "EUR", 2100, (1, 1), "central", "Europe/Amsterdam", 52_367_573, 4_904_139),
    Market("be", "BE", "EUR", 2100, (1, 1), "central", "Europe/Brussels", 50_850_346, 4_351_721),
    Market("si", "SI", "EUR", 2200, (1, 1), "central", "Europe/Ljubljana", 46_056_947, 14_505_751),
    Market("hr", "HR", "EUR", 2500, (1, 1), "central", "Europe/Zagreb", 45_815_011, 15_981_919),
    Market("fr", "FR", "EUR", 2000, (1, 1), "west", "Europe/Paris", 48_856_614, 2_352_222),
    Market("es", "ES", "EUR", 2100, (1, 1), "west", "Europe/Madrid", 40_416_775, -3_703_790),
    Market("pt", "PT", "EUR", 2300, (1, 1), "west", "Europe/Lisbon", 38_722_252, -9_139_337),
    Market("it", "IT", "EUR", 2200, (1, 1), "west", "Europe/Rome", 41_902_784, 12_496_366),
)
WAREHOUSES = {"east": ("wh-east", "PL"), "central": ("wh-central", "DE"), "west": ("wh-west", "ES")}
BRANDS = ("north", "tide", "ember")


@dataclass(frozen=True, slots=True)
class Location:
    location_id: str
    kind: str  # warehouse | store
    country: str
    capabilities: tuple[str, ...]
    market: str | None = None  # a store's market


@dataclass(frozen=True, slots=True)
class Channel:
    channel_id: str
    brand: str
    market: Market
    sourcing: tuple[tuple[str, int, int], ...]  # (location, priority, safety stock)


@dataclass(frozen=True, slots=True)
class Locker:
    point_id: str
    market: Market
    lat_e6: int
    lon_e6: int
    capacity: int


@dataclass
class World:
    seed: int
    skus: list[str]  # most popular first
    brand_of: dict[str, str]
    base_price: dict[str, int]  # euro cents
    locations: list[Location]
    channels: list[Channel]
    lockers: list[Locker]
    stock: dict[tuple[str, str], int]  # (sku, location) → units
    # Cumulative popularity weights per brand, for drawing SKUs with a long tail.
    _by_brand: dict[str, tuple[list[str], list[float]]] = field(default_factory=dict)

    def channel(self, channel_id: str) -> Channel:
        return next(c for c in self.channels if c.channel_id == channel_id)

    def price(self, sku: str, market: Market) -> int:
        """The SKU's price in the market's currency, minor units, ending in 99."""
        numerator, denominator = market.per_euro_cent
        local = self.base_price[sku] * numerator // denominator
        return max(99, local // 100 * 100 + 99)

    def draw_sku(self, rng: random.Random, brand: str) -> str:
        """A SKU of ``brand``, popular ones far more often (Zipf-like)."""
        skus, cumulative = self._by_brand[brand]
        return skus[bisect.bisect_left(cumulative, rng.random() * cumulative[-1])]

    def stores_of(self, market: Market) -> list[Location]:
        return [x for x in self.locations if x.kind == "store" and x.market == market.code]

    def units(self) -> int:
        return sum(self.stock.values())


def build(
    seed: int = 7,
    skus: int = 50_000,
    brands: int = 3,
    markets: int = 19,
    stores_per_market: int = 2,
    store_range: int = 500,
    lockers_per_market: int = 3,
) -> World:
    """The world for ``seed``. Every SKU is stocked at its brand's warehouses by popularity
    (the tail thinly, some at 0); each store carries the ``store_range`` most popular SKUs of
    every brand, a few units each."""
    rng = random.Random(seed)
    chosen_markets = MARKETS[:markets]
    chosen_brands = BRANDS[:brands]
    catalogue = [f"{chosen_brands[n % brands].upper()}-{n:06d}" for n in range(skus)]
    rng.shuffle(catalogue)  # popularity rank is unrelated to the number
    brand_of = {sku: sku.split("-")[0].lower() for sku in catalogue}
    base_price = {sku: rng.randrange(9, 150) * 100 + 99 for sku in catalogue}
    weights = [1 / (rank + 1) ** 1.07 for rank in range(skus)]

    locations = [
        Location(location_id, "warehouse", country, ("ship",))
        for location_id, country in WAREHOUSES.values()
    ]
    for market in chosen_markets:
        for n in range(1, stores_per_market + 1):
            locations.append(
                Location(
                    f"store-{market.code}-{n}",
                    "store",
                    market.country,
                    ("click_and_collect", "ship_from_store"),
                    market.code,
                )
            )
    stock: dict[tuple[str, str], int] = {}
    top_weight = weights[0]
    for rank, sku in enumerate(catalogue):
        share = weights[rank] / top_weight
        for location_id, _ in WAREHOUSES.values():
            # The head is deep (hundreds), the tail thin (0 to 3): where overselling bites.
            stock[(sku, location_id)] = int(400 * share) + rng.randrange(0, 4)
    ranked_by_brand: dict[str, list[str]] = {b: [] for b in chosen_brands}
    for sku in catalogue:
        ranked_by_brand[brand_of[sku]].append(sku)
    for location in locations:
        if location.kind != "store":
            continue
        for brand in chosen_brands:
            for sku in ranked_by_brand[brand][:store_range]:
                stock[(sku, location.location_id)] = rng.randrange(0, 6)

    channels = []
    for brand, market in itertools.product(chosen_brands, chosen_markets):
        first, _ = WAREHOUSES[market.region]
        others = [w for w, _ in WAREHOUSES.values() if w != first]
        sourcing = [(first, 1, 0), *((w, 2 + i, 2) for i, w in enumerate(others))]
        sourcing += [(s.location_id, 10 + i, 1) for i, s in enumerate(_stores(locations, market))]
        channels.append(Channel(f"{brand}-{market.code}", brand, market, tuple(sourcing)))

    lockers = []
    for market in chosen_markets:
        for n in range(1, lockers_per_market + 1):
            lockers.append(
                Locker(
                    f"locker-{market.code}-{n}",
                    market,
                    market.lat_e6 + rng.randrange(-30_000, 30_000),
                    market.lon_e6 + rng.randrange(-30_000, 30_000),
                    rng.choice((20, 40, 60)),
                )
            )
    world = World(seed, catalogue, brand_of, base_price, locations, channels, lockers, stock)
    for brand in chosen_brands:
        members = [
            (sku, weights[rank]) for rank, sku in enumerate(catalogue) if brand_of[sku] == brand
        ]
        world._by_brand[brand] = (
            [sku for sku, _ in members],
            list(itertools.accumulate(weight for _, weight in members)),
        )
    return world


def _stores(locations: list[Location], market: Market) -> list[Location]:
    return [x for x in locations if x.kind == "store" and x.market == market.code]


def stock_rows(world: World) -> Iterator[str]:
    """The snapshot as CSV lines (header first), the format of inventory's bulk import."""
    yield "sku,location_id,on_hand\n"
    for (sku, location_id), units in world.stock.items():
        yield f"{sku},{location_id},{units}\n"


def price_rows(world: World, channel: Channel) -> Iterator[str]:
    """The channel's prices as CSV lines, in major units as a price file has them."""
    yield "sku,price\n"
    digits = 2
    for sku in world.skus:
        if world.brand_of[sku] == channel.brand:
            minor = world.price(sku, channel.market)
            yield f"{sku},{minor // 10**digits}.{minor % 10**digits:02d}\n"
