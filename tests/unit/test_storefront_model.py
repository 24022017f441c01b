"""The storefront's read model and how its feed reads events: versions, tombstones, statuses,
staleness, and the bytes of real events decoded on the fast path or refused."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import msgspec
import pytest
from confluent_kafka import Message

import omnistock.contracts  # noqa: F401 - registers the event types
from omnistock.contracts.inventory import AvailabilityChanged, StockMoved
from omnistock.contracts.pricing import PriceChanged
from omnistock.platform import events
from omnistock.platform.clock import ManualClock
from omnistock.platform.settings import Settings
from omnistock.storefront.feed import AvailabilityEnvelope, Feed, PriceEnvelope
from omnistock.storefront.model import EMPTY, ReadModel, StockStatus, stock_status
from omnistock.storefront.settings import StorefrontSettings

T0 = datetime(2026, 11, 29, 12, tzinfo=UTC)
AVAILABILITY, PRICES = "test.availability", "test.prices"


def price(model: ReadModel, sku: str, version: int, effective: int, regular: int) -> bool:
    return model.apply_price(
        "brand-pl", sku, version, 0, effective, regular, "PLN", False, None, None
    )


def test_the_highest_version_wins_whatever_the_order() -> None:
    model = ReadModel()
    assert model.apply_availability("brand-pl", "A", 5, 3, 0)
    assert not model.apply_availability("brand-pl", "A", 9, 2, 0)  # older: dropped
    assert not model.apply_availability("brand-pl", "A", 9, 3, 0)  # a repeat: dropped
    assert price(model, "A", 1, 12_999, 12_999)
    assert not price(model, "A", 1, 1, 1)
    assert model.apply_availability("brand-pl", "A", 4, 4, 1)
    entry = model.get("brand-pl", "A")
    assert entry is not None
    assert (entry.available, entry.availability_version, entry.availability_partition) == (4, 4, 1)
    assert (entry.effective, entry.regular, entry.price_version) == (12_999, 12_999, 1)
    assert model.entries == 1


def test_a_part_not_published_yet_reads_as_unknown() -> None:
    model = ReadModel()
    price(model, "A", 1, 500, 700)
    entry = model.get("brand-pl", "A")
    assert entry is not None
    assert not entry.has_availability
    assert entry.available is None
    assert entry.has_price
    assert model.get("brand-pl", "B") is None
    assert model.get("brand-cz", "A") is None


def test_tombstones_clear_a_part_and_the_entry_goes_with_its_last_part() -> None:
    model = ReadModel()
    model.apply_availability("brand-pl", "A", 5, 3, 0)
    price(model, "A", 2, 500, 500)
    model.remove_price("brand-pl", "A")
    entry = model.get("brand-pl", "A")
    assert entry is not None
    assert not entry.has_price
    assert entry.effective is None
    assert price(model, "A", 3, 600, 600)  # published again later
    model.remove_price("brand-pl", "A")
    model.remove_availability("brand-pl", "A")
    assert model.get("brand-pl", "A") is None
    assert model.skus("brand-pl") is None
    assert model.entries == 0
    model.remove_availability("brand-pl", "nothing")  # unknown keys change nothing


def test_skus_and_amounts_are_shared_between_channels() -> None:
    model = ReadModel()
    for channel in ("brand-pl", "brand-cz"):
        # Strings and ints made at run time, as a decoder makes them: equal, not identical.
        sku, amount = "".join(["SKU", "-1"]), int("10001")
        model.apply_availability(channel, sku, 1, 1, 0)
        model.apply_price(channel, sku, 1, 0, amount, int("10001"), "PLN", False, None, None)
    pl, cz = model.skus("brand-pl"), model.skus("brand-cz")
    assert pl is not None
    assert cz is not None
    (pl_sku,), (cz_sku,) = pl, cz
    assert pl_sku is cz_sku
    assert pl["SKU-1"].effective is cz["SKU-1"].effective is pl["SKU-1"].regular
    assert sys.getsizeof(pl["SKU-1"]) <= 120, "an entry must stay small for a million of them"


@pytest.mark.parametrize(
    ("available", "threshold", "status"),
    [
        (None, 5, StockStatus.OUT_OF_STOCK),
        (0, 5, StockStatus.OUT_OF_STOCK),
        (1, 5, StockStatus.LOW_STOCK),
        (5, 5, StockStatus.LOW_STOCK),
        (6, 5, StockStatus.IN_STOCK),
        (1, 0, StockStatus.IN_STOCK),
    ],
)
def test_stock_status(available: int | None, threshold: int, status: StockStatus) -> None:
    assert stock_status(available, threshold) is status


def test_staleness_is_that_of_the_entrys_least_fresh_partition() -> None:
    model = ReadModel()
    model.availability_caught_up = [100.0, 90.0]
    model.prices_caught_up = [95.0, 99.0]
    model.apply_availability("brand-pl", "A", 1, 1, 0)
    model.apply_price("brand-pl", "A", 1, 1, 10, 10, "PLN", False, None, None)
    entry = model.get("brand-pl", "A")
    assert entry is not None
    assert model.staleness_s(entry, 101.0) == pytest.approx(2.0)  # prices partition 1: 99
    # A part not published yet is as fresh as its topic's least fresh partition.
    model.apply_availability("brand-pl", "B", 1, 1, 0)
    only_stock = model.get("brand-pl", "B")
    assert only_stock is not None
    assert model.staleness_s(only_stock, 101.0) == pytest.approx(6.0)
    assert model.oldest_catch_up() == 90.0
    assert EMPTY.availability_partition == EMPTY.price_partition == -1


def test_thresholds_come_per_channel_with_a_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMNISTOCK_STOREFRONT_LOW_STOCK_THRESHOLD", "3")
    monkeypatch.setenv(
        "OMNISTOCK_STOREFRONT_LOW_STOCK_THRESHOLDS", '{"brand-pl": 10, "brand-cz": 0}'
    )
    own = StorefrontSettings()
    assert (own.threshold("brand-pl"), own.threshold("brand-cz"), own.threshold("x")) == (10, 0, 3)
    monkeypatch.setenv("OMNISTOCK_STOREFRONT_LOW_STOCK_THRESHOLDS", '{"Not A Channel": 1}')
    with pytest.raises(ValueError, match="pattern"):
        StorefrontSettings()


def encoded(payload: object, version: int) -> bytes:
    return events.encode(
        payload, source="/omnistock/test", subject="k", time=T0, aggregate_version=version
    )[1]


def message(topic: str, value: bytes | None, partition: int = 0, key: bytes = b"") -> Message:
    return Message(topic=topic, partition=partition, offset=0, key=key, value=value)


@pytest.fixture
def feed() -> tuple[Feed, ReadModel]:
    model = ReadModel()
    own = StorefrontSettings(availability_topic=AVAILABILITY, prices_topic=PRICES)
    return Feed(Settings(), own, model, ManualClock(T0)), model


def test_the_lean_envelopes_read_what_the_platform_encodes() -> None:
    sale = PriceChanged("brand-pl", "A", 7, 8_999, 12_999, "PLN", True, 9_999, "2026-12-01")
    decoded = msgspec.json.decode(encoded(sale, 7), type=PriceEnvelope)
    assert msgspec.structs.asdict(decoded.data) == {  # type: ignore[attr-defined]
        "channel_id": "brand-pl",
        "sku": "A",
        "version": 7,
        "effective": 8_999,
        "regular": 12_999,
        "currency": "PLN",
        "reduced": True,
        "lowest_30d": 9_999,
        "valid_until": "2026-12-01",
    }
    with pytest.raises(msgspec.ValidationError):  # a price event is no availability event
        msgspec.json.decode(encoded(sale, 7), type=AvailabilityEnvelope)


def test_the_feed_applies_events_and_skips_what_it_cannot_read(
    feed: tuple[Feed, ReadModel],
) -> None:
    reader, model = feed
    moved = StockMoved(1, "A", "wh-1", 3, "receipt", 3)
    reader._apply(
        [
            message(AVAILABILITY, encoded(AvailabilityChanged("brand-pl", "A", 7, 2), 2), 4),
            message(AVAILABILITY, encoded(AvailabilityChanged("brand-pl", "A", 1, 1), 1), 4),
            message(PRICES, encoded(PriceChanged("brand-pl", "A", 3, 10, 10, "EUR", False), 3)),
            message(AVAILABILITY, b"{not json"),
            message(AVAILABILITY, encoded(moved, 1)),  # another type on the topic: skipped
            message(PRICES, encoded(AvailabilityChanged("brand-pl", "B", 1, 1), 1)),
            message(AVAILABILITY, encoded(AvailabilityChanged("brand-pl", "C", 1, 1), 1)),
            message(AVAILABILITY, None, key=b"brand-pl:C"),  # deleted again
        ]
    )
    entry = model.get("brand-pl", "A")
    assert entry is not None
    assert (entry.available, entry.availability_version, entry.availability_partition) == (7, 2, 4)
    assert (entry.effective, entry.currency, entry.price_version) == (10, "EUR", 3)
    assert model.get("brand-pl", "B") is None, "an event on the wrong topic is not applied"
    assert model.get("brand-pl", "C") is None
    assert model.entries == 1
