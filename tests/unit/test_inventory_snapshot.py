"""Reading a stock snapshot: lines out of a byte stream however it is cut, rows and errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from omnistock.inventory.bulk import plan_chunk
from omnistock.inventory.domain import StockLevel
from omnistock.inventory.snapshot import RowError, SnapshotRow, read_rows, split_lines


async def _stream(pieces: Sequence[bytes]) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


def lines_of(pieces: Sequence[bytes], max_line: int = 4096) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [line async for line in split_lines(_stream(pieces), max_line)]

    return asyncio.run(collect())


def cut(body: bytes, points: list[int]) -> list[bytes]:
    edges = [0, *sorted(p % (len(body) + 1) for p in points), len(body)]
    return [body[a:b] for a, b in pairwise(edges)]


line_text = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))


@given(
    lines=st.lists(line_text, min_size=1, max_size=20),
    crlf=st.booleans(),
    final_terminator=st.booleans(),
    points=st.lists(st.integers(min_value=0), max_size=10),
)
def test_lines_come_out_the_same_however_the_stream_is_cut(
    lines: list[bytes], crlf: bool, final_terminator: bool, points: list[int]
) -> None:
    terminator = b"\r\n" if crlf else b"\n"
    body = terminator.join(lines) + (terminator if final_terminator else b"")
    expected = lines if final_terminator or lines[-1] else lines[:-1]
    assert lines_of(cut(body, points)) == expected


def test_an_overlong_line_comes_out_cut_and_the_next_line_keeps_its_place() -> None:
    pieces = [b"ok\n" + b"x" * 8, b"x" * 8, b"x" * 8 + b"\r\nnext\r\n", b"last"]
    assert lines_of(pieces, max_line=10) == [b"ok", b"x" * 11, b"next", b"last"]
    assert lines_of([b"y" * 30], max_line=10) == [b"y" * 11]


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
