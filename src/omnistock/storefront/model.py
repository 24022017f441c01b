"""The read model: the latest availability and price of each (channel, SKU), in memory.

Pure: no I/O and no clock; the feed applies events and stamps freshness, the views read. A
million entries must fit in a few hundred megabytes, so an entry is one flat immutable struct
without a garbage-collector header (~100 bytes), channel and SKU strings are interned (a SKU is
sold in many channels), and a change replaces the entry whole: a reader in another thread
always sees one consistent entry, never half an update.
"""

from __future__ import annotations

import sys
from enum import StrEnum

import msgspec

NO_PARTITION = -1


class StockStatus(StrEnum):
    IN_STOCK = "in_stock"
    LOW_STOCK = "low_stock"
    OUT_OF_STOCK = "out_of_stock"


def stock_status(available: int | None, low_stock_threshold: int) -> StockStatus:
    """Out of stock at 0 (or nothing published yet), low up to the channel's threshold."""
    if available is None or available <= 0:
        return StockStatus.OUT_OF_STOCK
    if available <= low_stock_threshold:
        return StockStatus.LOW_STOCK
    return StockStatus.IN_STOCK


class Entry(msgspec.Struct, frozen=True, gc=False):
    """What one channel sells of one SKU. A part not published yet has version -1 and Nones.

    The partitions say which partition of each topic the entry came from: the entry is as fresh
    as the replica's last catch-up with those two partitions.
    """

    available: int | None
    availability_version: int
    availability_partition: int
    price_version: int
    price_partition: int
    effective: int | None
    regular: int | None
    currency: str | None
    reduced: bool
    lowest_30d: int | None
    valid_until: str | None

    @property
    def has_availability(self) -> bool:
        return self.availability_version >= 0

    @property
    def has_price(self) -> bool:
        return self.price_version >= 0


EMPTY = Entry(None, -1, NO_PARTITION, -1, NO_PARTITION, None, None, None, False, None, None)


class ReadModel:
    """Entries per channel, and when the replica last held everything of each partition."""

    def __init__(self) -> None:
        self.channels: dict[str, dict[str, Entry]] = {}
        self.entries = 0
        # Epoch seconds at which this replica last held every message a partition had; an
        # answer from that partition is at most now minus that behind the truth.
        self.availability_caught_up: list[float] = []
        self.prices_caught_up: list[float] = []
        # Repeated amounts share one int object (prices repeat a lot; an int is 28 bytes).
        self._amounts: dict[int, int] = {}

    def skus(self, channel: str) -> dict[str, Entry] | None:
        return self.channels.get(channel)

    def get(self, channel: str, sku: str) -> Entry | None:
        skus = self.channels.get(channel)
        return None if skus is None else skus.get(sku)

    def apply_availability(
        self, channel: str, sku: str, available: int, version: int, partition: int
    ) -> bool:
        """Keep the availability if it is newer than what the entry has; True if kept."""
        skus = self.channels.get(channel)
        if skus is None:
            skus = self.channels[sys.intern(channel)] = {}
        old = skus.get(sku)
        if old is None:
            old, sku = EMPTY, sys.intern(sku)
            self.entries += 1
        elif version <= old.availability_version:
            return False
        skus[sku] = Entry(
            available,
            version,
            partition,
            old.price_version,
            old.price_partition,
            old.effective,
            old.regular,
            old.currency,
            old.reduced,
            old.lowest_30d,
            old.valid_until,
        )
        return True

    def apply_price(
        self,
        channel: str,
        sku: str,
        version: int,
        partition: int,
        effective: int,
        regular: int,
        currency: str,
        reduced: bool,
        lowest_30d: int | None,
        valid_until: str | None,
    ) -> bool:
        """Keep the price if it is newer than what the entry has; True if kept."""
        skus = self.channels.get(channel)
        if skus is None:
            skus = self.channels[sys.intern(channel)] = {}
        old = skus.get(sku)
        if old is None:
            old, sku = EMPTY, sys.intern(sku)
            self.entries += 1
        elif version <= old.price_version:
            return False
        amounts = self._amounts
        effective = amounts.setdefault(effective, effective)
        skus[sku] = Entry(
            old.available,
            old.availability_version,
            old.availability_partition,
            version,
            partition,
            effective,
            effective if regular == effective else amounts.setdefault(regular, regular),
            old.currency if old.currency == currency else sys.intern(currency),
            reduced,
            lowest_30d,
            valid_until,
        )
        return True

    def remove_availability(self, channel: str, sku: str) -> None:
        """A tombstone: the SKU's availability was deleted from the topic."""
        old = self.get(channel, sku)
        if old is not None and old.has_availability:
            self._replace(
                channel, sku, msgspec.structs.replace(old, available=None, availability_version=-1)
            )

    def remove_price(self, channel: str, sku: str) -> None:
        old = self.get(channel, sku)
        if old is not None and old.has_price:
            cleared = msgspec.structs.replace(
                old,
                price_version=-1,
                effective=None,
                regular=None,
                currency=None,
                reduced=False,
                lowest_30d=None,
                valid_until=None,
            )
            self._replace(channel, sku, cleared)

    def staleness_s(self, entry: Entry, now: float) -> float:
        """How far behind the truth ``entry`` may be at ``now`` (epoch seconds)."""
        return now - min(
            _caught_up(self.availability_caught_up, entry.availability_partition),
            _caught_up(self.prices_caught_up, entry.price_partition),
        )

    def oldest_catch_up(self) -> float:
        """The catch-up furthest back among all partitions: the replica's worst staleness."""
        return min(self.availability_caught_up + self.prices_caught_up, default=0.0)

    def _replace(self, channel: str, sku: str, entry: Entry) -> None:
        skus = self.channels[channel]
        if entry.has_availability or entry.has_price:
            skus[sku] = entry
            return
        del skus[sku]
        self.entries -= 1
        if not skus:
            del self.channels[channel]


def _caught_up(partitions: list[float], partition: int) -> float:
    if partition == NO_PARTITION or partition >= len(partitions):
        # Not published there yet: as fresh as the topic's least fresh partition.
        return min(partitions, default=0.0)
    return partitions[partition]
