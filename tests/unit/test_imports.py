"""What every bulk import shares: lines out of a byte stream however it is cut, columns read
from a CSV header or a JSON object, chunks, the report's errors and the media type."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnistock.platform.imports import (
    BadRow,
    Columns,
    Fields,
    Format,
    ImportRefused,
    ImportReport,
    RowError,
    chunks,
    read_rows,
    split_lines,
)
from omnistock.platform.imports.uploads import format_of
from omnistock.platform.problems import Problem


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


COLUMNS = Columns(("sku", "price"), ("valid_from",))


def _as_fields(line: int, fields: Fields) -> tuple[int, Fields]:
    if fields.get("sku") == "bad":
        raise BadRow("a bad sku")
    return line, fields


def rows_of(body: bytes, fmt: Format) -> list[tuple[int, Fields] | RowError]:
    async def collect() -> list[tuple[int, Fields] | RowError]:
        lines = split_lines(_stream([body]))
        return [row async for row in read_rows(lines, fmt, COLUMNS, _as_fields)]

    return asyncio.run(collect())


def test_csv_cells_are_named_by_the_header_and_optional_columns_may_be_left_out() -> None:
    body = b'\xef\xbb\xbfprice , sku\r\n1.50,A\r\n\r\n"2,5",B\nbad,1\n3,bad\n4\n'
    assert rows_of(body, "csv") == [
        (2, {"sku": "A", "price": "1.50"}),
        (4, {"sku": "B", "price": "2,5"}),
        (5, {"sku": "1", "price": "bad"}),
        RowError(6, "a bad sku"),
        RowError(7, "expected 2 fields, found 1"),
    ]
    with_optional = rows_of(b"valid_from,sku,price\n,A,1\n2026-01-01T00:00Z,B,2\n", "csv")
    assert with_optional == [
        (2, {"valid_from": "", "sku": "A", "price": "1"}),
        (3, {"valid_from": "2026-01-01T00:00Z", "sku": "B", "price": "2"}),
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "line 1 must be the CSV header sku,price (and optionally valid_from)"),
        (b"\n1,A\n", "line 1 must be the CSV header"),
        (
            b"sku,price,currency\n",
            "unknown column(s) 'currency': the header is sku,price (in any order), "
            "optionally valid_from, and nothing else",
        ),
        (b"sku,price,sku\n", "column(s) 'sku' repeated"),
        (b"sku,valid_from\n", "missing column(s) 'price'"),
        (b'sku,"price\n', "line 1, the header: not valid CSV"),
        (b"sku,\xffprice\n", "line 1, the header: not valid UTF-8"),
    ],
)
def test_a_csv_file_without_a_usable_header_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(ImportRefused) as refused:
        rows_of(body, "csv")
    assert message in str(refused.value)


def test_json_lines_are_objects_with_the_columns_and_no_others() -> None:
    body = b"\n".join(
        [
            b'{"sku": "A", "price": 1.5}',
            b'{"sku": "A", "price": "2", "valid_from": null}',
            b'{"sku": "A"}',
            b'{"sku": "A", "price": 1, "currency": "EUR"}',
            b'["A", 1]',
            b'{"sku": "A", "price": 1',
            b"",
            b'{"sku": "bad", "price": 1}',
        ]
    )
    rows = rows_of(body, "jsonl")
    assert rows[:5] == [
        (1, {"sku": "A", "price": 1.5}),
        (2, {"sku": "A", "price": "2", "valid_from": None}),
        RowError(3, "missing field(s) 'price'"),
        RowError(4, "unknown field(s) 'currency'"),
        RowError(5, "expected a JSON object with sku, price (optionally valid_from)"),
    ]
    assert isinstance(rows[5], RowError)
    assert (rows[5].line, rows[5].error.startswith("not valid JSON")) == (6, True)
    assert rows[6] == RowError(8, "a bad sku")


@dataclass(frozen=True)
class Item:
    line: int
    key: str


def test_chunks_hold_at_most_so_many_rows_and_keys_and_errors_go_to_the_report() -> None:
    items: list[Item | RowError] = [
        Item(1, "a"),
        Item(2, "a"),
        RowError(3, "bad"),
        Item(4, "b"),
        Item(5, "c"),
        Item(6, "c"),
        Item(7, "c"),
        Item(8, "d"),
    ]

    async def rows() -> AsyncIterator[Item | RowError]:
        for item in items:
            yield item

    async def collect() -> list[list[int]]:
        found = chunks(rows(), report, max_rows=3, max_keys=2, lock_key=lambda item: item.key)
        return [[item.line for item in chunk] async for chunk in found]

    report = ImportReport()
    assert asyncio.run(collect()) == [[1, 2, 4], [5, 6, 7], [8]]
    assert (report.rows, report.rejected, report.errors) == (8, 1, [RowError(3, "bad")])


def test_the_report_keeps_the_first_errors_by_line_and_counts_them_all() -> None:
    report = ImportReport(max_errors=3)
    for line in (9, 2, 7, 5, 8, 1, 6, 4):
        report.reject(line, f"line {line}")
    report.finish(0.0)
    summary = report.as_dict()
    assert summary["errors"] == [{"line": n, "error": f"line {n}"} for n in (1, 2, 4)]
    assert (summary["rejected"], summary["errors_truncated"], summary["rows"]) == (8, True, 0)
    assert "max_errors" not in summary


@pytest.mark.parametrize(
    ("content_type", "fmt"),
    [
        ("text/csv", "csv"),
        ("text/CSV; charset=UTF-8", "csv"),
        ("application/x-ndjson", "jsonl"),
        ('application/jsonl; charset="utf8"', "jsonl"),
    ],
)
def test_csv_and_json_lines_in_utf8_are_the_formats(content_type: str, fmt: Format) -> None:
    assert format_of(content_type) == fmt


@pytest.mark.parametrize(
    "content_type", [None, "application/json", "text/plain", "text/csv; charset=latin-1"]
)
def test_any_other_media_type_is_answered_415(content_type: str | None) -> None:
    with pytest.raises(Problem) as refused:
        format_of(content_type)
    assert refused.value.status == 415
