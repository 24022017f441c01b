"""The stock snapshot file: absolute on-hand counts per SKU and location, as CSV (header
``sku,location_id,on_hand``, in any order) or JSON lines (``{"sku", "location_id", "on_hand"}``).

Reading only, no database: lines come in from a stream and go out as checked rows or as errors
naming the physical line (the CSV header is line 1). Blank lines are no rows but count for the
line numbers; a UTF-8 byte order mark at the start is ignored.
"""

from __future__ import annotations

import csv
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

import orjson

from omnistock.inventory.domain import SKU_PATTERN

Format = Literal["csv", "jsonl"]

COLUMNS = ("sku", "location_id", "on_hand")
MAX_ON_HAND = 10_000_000
MAX_LINE_BYTES = 4_096

_SKU = re.compile(SKU_PATTERN)
_INTEGER = re.compile(r"-?[0-9]+")
_BOM = b"\xef\xbb\xbf"


class SnapshotRefused(ValueError):
    """The snapshot as a whole cannot be read (a missing or wrong CSV header)."""


class BadRow(ValueError):
    """One row is wrong; the message says what."""


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    line: int
    sku: str
    location_id: str
    on_hand: int

    @property
    def item(self) -> tuple[str, str]:
        return self.sku, self.location_id


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    error: str


async def split_lines(
    chunks: AsyncIterable[bytes], max_line: int = MAX_LINE_BYTES
) -> AsyncIterator[bytes]:
    """The physical lines of a byte stream, without their LF or CRLF; a last line without a
    terminator counts. A line longer than ``max_line`` comes out cut to ``max_line + 1`` bytes
    (so that it is rejected as too long) and the rest of it is skipped: memory stays bounded
    and the line numbers stay right."""
    tail = b""
    overlong = False  # inside a line that was already given out cut short
    async for chunk in chunks:
        lines = chunk.split(b"\n")
        lines[0] = tail + lines[0]
        tail = lines.pop()
        for line in lines:
            if overlong:
                overlong = False
                continue
            yield _without_cr(line[: max_line + 1])
        if len(tail) > max_line:
            if not overlong:
                yield tail[: max_line + 1]
                overlong = True
            tail = b""
    if tail and not overlong:
        yield _without_cr(tail)


def _without_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


RowParser = Callable[[bytes], tuple[object, object, object]]


async def read_rows(
    lines: AsyncIterator[bytes], fmt: Format, locations: frozenset[str]
) -> AsyncIterator[SnapshotRow | RowError]:
    """One row or one error per non-blank line after the header. Raises ``SnapshotRefused``
    before the first row when a CSV header is missing or wrong."""
    numbered = _numbered(lines)
    parse = await _csv_parser(numbered) if fmt == "csv" else _json_fields
    async for number, raw in numbered:
        if not raw.strip():
            continue
        try:
            row = _checked_row(number, raw, parse, locations)
        except BadRow as exc:
            yield RowError(number, str(exc))
            continue
        yield row


async def _numbered(lines: AsyncIterator[bytes]) -> AsyncIterator[tuple[int, bytes]]:
    number = 0
    async for line in lines:
        number += 1
        if number == 1:
            line = line.removeprefix(_BOM)
        yield number, line.rstrip(b"\r\n")


async def _csv_parser(numbered: AsyncIterator[tuple[int, bytes]]) -> RowParser:
    first = await anext(numbered, None)
    if first is None or not first[1].strip():
        raise SnapshotRefused(f"line 1 must be the CSV header {','.join(COLUMNS)}")
    try:
        names = [name.strip() for name in _csv_fields(first[1])]
    except BadRow as exc:
        raise SnapshotRefused(f"line 1, the header: {exc}") from None
    positions = _header_positions(names)

    def parse(raw: bytes) -> tuple[object, object, object]:
        fields = _csv_fields(raw)
        if len(fields) != len(COLUMNS):
            raise BadRow(f"expected {len(COLUMNS)} fields, found {len(fields)}")
        sku, location_id, on_hand = (fields[p].strip() for p in positions)
        if not _INTEGER.fullmatch(on_hand):
            raise BadRow(f"on_hand {on_hand!r} is not an integer")
        return sku, location_id, int(on_hand)

    return parse


def _header_positions(names: list[str]) -> tuple[int, int, int]:
    expected = f"the header is {','.join(COLUMNS)} (in any order) and nothing else"
    if unknown := [n for n in names if n not in COLUMNS]:
        raise SnapshotRefused(f"unknown column(s) {', '.join(map(repr, unknown))}: {expected}")
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise SnapshotRefused(f"column(s) {', '.join(map(repr, repeated))} repeated: {expected}")
    if missing := [c for c in COLUMNS if c not in names]:
        raise SnapshotRefused(f"missing column(s) {', '.join(map(repr, missing))}: {expected}")
    sku, location_id, on_hand = (names.index(c) for c in COLUMNS)
    return sku, location_id, on_hand


def _csv_fields(raw: bytes) -> list[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRow("not valid UTF-8") from None
    if '"' not in text:
        return text.split(",")
    try:
        return next(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise BadRow(f"not valid CSV: {exc}") from None


def _json_fields(raw: bytes) -> tuple[object, object, object]:
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRow(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadRow(f"expected a JSON object with {', '.join(COLUMNS)}")
    if unknown := sorted(set(value) - set(COLUMNS)):
        raise BadRow(f"unknown field(s) {', '.join(map(repr, unknown))}")
    if missing := [c for c in COLUMNS if c not in value]:
        raise BadRow(f"missing field(s) {', '.join(map(repr, missing))}")
    return value["sku"], value["location_id"], value["on_hand"]


def _checked_row(
    number: int, raw: bytes, parse: RowParser, locations: frozenset[str]
) -> SnapshotRow:
    if len(raw) > MAX_LINE_BYTES:
        raise BadRow(f"line longer than {MAX_LINE_BYTES} bytes")
    sku, location_id, on_hand = parse(raw)
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
    return SnapshotRow(number, sku, location_id, on_hand)
