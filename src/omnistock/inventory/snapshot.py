"""The stock snapshot file: absolute on-hand counts per SKU and location, as CSV (header
``sku,location_id,on_hand``, in any order) or JSON lines (``{"sku", "location_id", "on_hand"}``).

Reading only, no database: lines come in from a stream and go out as checked rows or as errors
naming the physical line (``platform.imports`` reads the lines and the columns).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from omnistock.inventory.domain import SKU_PATTERN
from omnistock.platform.imports import BadRow, Columns, Fields, Format, RowChecker, RowError
from omnistock.platform.imports import read_rows as read_file_rows

COLUMNS = Columns(("sku", "location_id", "on_hand"))
MAX_ON_HAND = 10_000_000

_SKU = re.compile(SKU_PATTERN)
_INTEGER = re.compile(r"-?[0-9]+")


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    line: int
    sku: str
    location_id: str
    on_hand: int

    @property
    def item(self) -> tuple[str, str]:
        return self.sku, self.location_id


def read_rows(
    lines: AsyncIterator[bytes], fmt: Format, locations: frozenset[str]
) -> AsyncIterator[SnapshotRow | RowError]:
    """One row or one error per non-blank line after the header. Raises
    ``imports.ImportRefused`` before the first row when a CSV header is missing or wrong."""
    return read_file_rows(lines, fmt, COLUMNS, _checker(fmt, locations))


def _checker(fmt: Format, locations: frozenset[str]) -> RowChecker[SnapshotRow]:
    def check(line: int, fields: Fields) -> SnapshotRow:
        on_hand = fields["on_hand"]
        if fmt == "csv":  # a CSV cell is text; in JSON, "4" is no integer
            on_hand = _csv_integer(on_hand)
        return _checked_row(line, fields["sku"], fields["location_id"], on_hand, locations)

    return check


def _csv_integer(cell: object) -> int:
    if not isinstance(cell, str) or not _INTEGER.fullmatch(cell):
        raise BadRow(f"on_hand {cell!r} is not an integer")
    return int(cell)


def _checked_row(
    line: int, sku: object, location_id: object, on_hand: object, locations: frozenset[str]
) -> SnapshotRow:
    if not isinstance(sku, str) or not _SKU.fullmatch(sku):
        raise BadRow(f"sku {sku!r} is not a SKU (letters, digits, '.', '_', '-'; at most 64)")
    if not isinstance(location_id, str) or location_id not in locations:
        raise BadRow(f"location_id {location_id!r} is not a known location")
    if not isinstance(on_hand, int) or isinstance(on_hand, bool):
        raise BadRow(f"on_hand {on_hand!r} is not an integer")
    if on_hand < 0:
        raise BadRow(f"on_hand {on_hand} is negative")
    if on_hand > MAX_ON_HAND:
        raise BadRow(f"on_hand {on_hand} is above the limit of {MAX_ON_HAND}")
    return SnapshotRow(line, sku, location_id, on_hand)
