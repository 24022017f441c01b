"""Reading a stock snapshot: rows and errors, and the movement each row becomes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from omnistock.inventory.bulk import plan_chunk
from omnistock.inventory.domain import StockLevel
from omnistock.inventory.snapshot import SnapshotRow, read_rows
from omnistock.platform.imports import RowError, split_lines


async def _stream(pieces: Sequence[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def csv_rows_of(body: bytes) -> list[SnapshotRow | RowError]:
    async def collect() -> list[SnapshotRow | RowError]:
        lines = split_lines(_stream([body]))
        return [r async for r in read_rows(lines, "csv", frozenset({"wh-1"}))]

    return asyncio.run(collect())


def test_an_overlong_row_is_an_error_on_its_own_line() -> None:
    body = b"sku,location_id,on_hand\n" + b"A," * 3000 + b"\nB,wh-1,2\n"
    assert csv_rows_of(body) == [
        RowError(2, "line longer than 4096 bytes"),
        SnapshotRow(3, "B", "wh-1", 2),
    ]


def test_each_row_becomes_a_movement_by_the_difference_unchanged_or_a_shortage() -> None:
    rows = [
        SnapshotRow(2, "A", "wh-1", 5),  # 3 on hand: +2
        SnapshotRow(3, "B", "wh-1", 4),  # 4 on hand: unchanged
        SnapshotRow(4, "C", "wh-1", 1),  # 2 reserved: a shortage
        SnapshotRow(5, "D", "wh-1", 6),  # unknown so far: +6
    ]
    levels = {
        ("A", "wh-1"): StockLevel("A", "wh-1", on_hand=3),
        ("B", "wh-1"): StockLevel("B", "wh-1", on_hand=4, reserved=4),
        ("C", "wh-1"): StockLevel("C", "wh-1", on_hand=3, reserved=2),
    }
    plan = plan_chunk(rows, levels, "erp", "import-1")
    assert [(c.sku, c.on_hand, c.movement_reason) for c in plan.changes] == [
        ("A", 2, "import"),
        ("D", 6, "import"),
    ]
    assert [r.sku for r in plan.shortages] == ["C"]
    assert plan.unchanged == 1
