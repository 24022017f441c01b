"""Streamed bulk imports of CSV or JSON-lines files: what every service's import shares.

A file comes in as a byte stream and goes out, row by row, as the service's checked rows or as
errors naming the physical line (the CSV header is line 1). Blank lines are no rows but count
for the line numbers; a UTF-8 byte order mark at the start is ignored. A CSV file names its
columns in its header, in any order; a JSON-lines file has one object per line.

Whatever the file's size, memory stays flat: lines are read as they arrive, good rows leave in
chunks, the errors kept for the report are capped, and the keys seen so far (which catch a row
repeated within the file) live in a temporary table of the import's connection.

``imports.uploads`` has the endpoint's side of an upload, ``imports.client`` the command line's.
"""

from __future__ import annotations

import csv
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol, TypeVar

import asyncpg
import orjson
import structlog

from omnistock.platform import db

log = structlog.get_logger(__name__)

Format = Literal["csv", "jsonl"]

MAX_LINE_BYTES = 4_096
MAX_ERRORS = 1_000
# A chunk locks its keys (SKUs, say), and each lock takes a slot in PostgreSQL's shared lock
# table (max_locks_per_transaction × max_connections, 6,400 with the defaults): a chunk stays
# well below that.
MAX_CHUNK_KEYS = 2_000

_BOM = b"\xef\xbb\xbf"

Row = TypeVar("Row")
Fields = dict[str, object]
RowChecker = Callable[[int, Fields], Row]
"""Turns a line number and its fields into a service's row; raises ``BadRow``."""
JsonDecoder = Callable[[bytes], object]


class ImportRefused(ValueError):
    """The file as a whole cannot be read (a missing or wrong CSV header)."""


class BadRow(ValueError):
    """One row is wrong; the message says what."""


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    error: str


@dataclass(frozen=True, slots=True)
class Columns:
    """The columns of a file: all of ``required``, any of ``optional``, nothing else."""

    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return self.required + self.optional

    def header(self) -> str:
        also = f" (and optionally {','.join(self.optional)})" if self.optional else ""
        return ",".join(self.required) + also

    def rule(self) -> str:
        also = f", optionally {','.join(self.optional)}," if self.optional else ""
        return f"the header is {','.join(self.required)} (in any order){also} and nothing else"


# Reading.


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


async def read_rows(
    lines: AsyncIterator[bytes],
    fmt: Format,
    columns: Columns,
    check: RowChecker[Row],
    *,
    decode_json: JsonDecoder = orjson.loads,
) -> AsyncIterator[Row | RowError]:
    """One row or one error per non-blank line after the header. A CSV row's fields are its
    cells, stripped; a JSON row's are its object's values, as ``decode_json`` gives them; an
    optional column a file leaves out is absent. Raises ``ImportRefused`` before the first row
    when a CSV header is missing or wrong."""
    numbered = _numbered(lines)
    parse = (
        await _csv_parser(numbered, columns) if fmt == "csv" else _json_parser(columns, decode_json)
    )
    async for number, raw in numbered:
        if not raw.strip():
            continue
        try:
            if len(raw) > MAX_LINE_BYTES:
                raise BadRow(f"line longer than {MAX_LINE_BYTES} bytes")
            row = check(number, parse(raw))
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


async def _csv_parser(
    numbered: AsyncIterator[tuple[int, bytes]], columns: Columns
) -> Callable[[bytes], Fields]:
    first = await anext(numbered, None)
    if first is None or not first[1].strip():
        raise ImportRefused(f"line 1 must be the CSV header {columns.header()}")
    try:
        names = [name.strip() for name in _csv_cells(first[1])]
    except BadRow as exc:
        raise ImportRefused(f"line 1, the header: {exc}") from None
    positions = _header_positions(names, columns)

    def parse(raw: bytes) -> Fields:
        cells = _csv_cells(raw)
        if len(cells) != len(names):
            raise BadRow(f"expected {len(names)} fields, found {len(cells)}")
        return {name: cells[position].strip() for name, position in positions.items()}

    return parse


def _header_positions(names: list[str], columns: Columns) -> dict[str, int]:
    if unknown := [n for n in names if n not in columns.names]:
        raise ImportRefused(f"unknown column(s) {_listed(unknown)}: {columns.rule()}")
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise ImportRefused(f"column(s) {_listed(repeated)} repeated: {columns.rule()}")
    if missing := [c for c in columns.required if c not in names]:
        raise ImportRefused(f"missing column(s) {_listed(missing)}: {columns.rule()}")
    return {name: names.index(name) for name in columns.names if name in names}


def _csv_cells(raw: bytes) -> list[str]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRow("not valid UTF-8") from None
    if '"' not in text:
        return text.split(",")  # the common case, several times faster than the csv module
    try:
        return next(csv.reader([text], strict=True))
    except csv.Error as exc:
        raise BadRow(f"not valid CSV: {exc}") from None


def _json_parser(columns: Columns, decode: JsonDecoder) -> Callable[[bytes], Fields]:
    optionally = f" (optionally {', '.join(columns.optional)})" if columns.optional else ""
    shape = f"expected a JSON object with {', '.join(columns.required)}{optionally}"

    def parse(raw: bytes) -> Fields:
        try:
            value = decode(raw)
        except ValueError as exc:  # orjson's and msgspec's decoding errors are ValueErrors
            raise BadRow(f"not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise BadRow(shape)
        if unknown := sorted(set(value) - set(columns.names)):
            raise BadRow(f"unknown field(s) {_listed(unknown)}")
        if missing := [c for c in columns.required if c not in value]:
            raise BadRow(f"missing field(s) {_listed(missing)}")
        return value

    return parse


def _listed(names: Sequence[str]) -> str:
    return ", ".join(map(repr, names))


# Chunking, repeats and the report.


@dataclass(slots=True, kw_only=True)
class ImportReport:
    """What an import did; a service's report adds its own counts. ``errors`` keeps the first
    ``max_errors`` errors by line; ``rejected`` counts them all."""

    rows: int = 0
    rejected: int = 0
    seconds: float = 0.0
    max_errors: int = MAX_ERRORS
    errors: list[RowError] = field(default_factory=list)

    def reject(self, line: int, error: str) -> None:
        self.rejected += 1
        self.errors.append(RowError(line, error))
        if len(self.errors) >= 2 * self.max_errors:
            self._keep_first_errors()

    def _keep_first_errors(self) -> None:
        # Errors are found out of line order (a repeat only when its chunk is applied):
        # keeping the lowest line numbers keeps the first ones of the file.
        self.errors.sort(key=lambda e: e.line)
        del self.errors[self.max_errors :]

    def finish(self, started: float) -> None:
        """Call once the import ended; ``started`` is its ``time.perf_counter()``."""
        self._keep_first_errors()
        self.seconds = round(time.perf_counter() - started, 3)

    def as_dict(self) -> dict[str, Any]:
        counts = {f.name: getattr(self, f.name) for f in fields(self)}
        del counts["max_errors"], counts["errors"]
        return {
            **counts,
            "errors": [{"line": e.line, "error": e.error} for e in self.errors],
            "errors_truncated": self.rejected > len(self.errors),
        }


class Numbered(Protocol):
    @property
    def line(self) -> int: ...


NumberedRow = TypeVar("NumberedRow", bound=Numbered)


async def chunks(
    rows: AsyncIterator[NumberedRow | RowError],
    report: ImportReport,
    *,
    max_rows: int,
    lock_key: Callable[[NumberedRow], str],
    max_keys: int = MAX_CHUNK_KEYS,
) -> AsyncIterator[list[NumberedRow]]:
    """Good rows in chunks of at most ``max_rows`` rows and ``max_keys`` distinct keys, what
    a chunk locks (``lock_key`` gives a row's); bad ones go into the report."""
    chunk: list[NumberedRow] = []
    keys: set[str] = set()
    async for row in rows:
        report.rows += 1
        if isinstance(row, RowError):
            report.reject(row.line, row.error)
            continue
        row_key = lock_key(row)
        if len(chunk) >= max_rows or (row_key not in keys and len(keys) >= max_keys):
            yield chunk
            chunk, keys = [], set()
        chunk.append(row)
        keys.add(row_key)
    if chunk:
        yield chunk


class SeenKeys:
    """The keys a file named so far, each with its first line, in a temporary table of the
    import's connection rather than in the process. Used within each chunk's transaction, so a
    chunk that fails forgets its keys too."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def __aenter__(self) -> SeenKeys:
        await self.conn.execute(
            """DROP TABLE IF EXISTS pg_temp.import_seen_keys;
               CREATE TEMPORARY TABLE import_seen_keys (
                   key text PRIMARY KEY,
                   line integer NOT NULL)"""
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        # Cleanup only: a connection that broke takes its temporary table with it.
        if not self.conn.is_closed():
            with suppress(asyncpg.PostgresError, asyncpg.InterfaceError):
                await self.conn.execute("DROP TABLE IF EXISTS pg_temp.import_seen_keys")

    async def first_occurrences(
        self, rows: Sequence[NumberedRow], key: Callable[[NumberedRow], str]
    ) -> tuple[list[NumberedRow], list[tuple[NumberedRow, int]]]:
        """The rows whose key the file has not named before, and the others, each with the
        line that named its key first."""
        first: dict[str, NumberedRow] = {}
        repeats: list[tuple[NumberedRow, int]] = []
        for row in rows:
            if (earlier := first.get(key(row))) is not None:
                repeats.append((row, earlier.line))
            else:
                first[key(row)] = row
        # All parts of one statement see the table as it was before it, so the join finds only
        # the earlier chunks' keys.
        found = await self.conn.fetch(
            """WITH incoming AS (
                   SELECT * FROM unnest($1::text[], $2::int[]) AS i(key, line)
               ), added AS (
                   INSERT INTO pg_temp.import_seen_keys (key, line)
                   SELECT key, line FROM incoming
                   ON CONFLICT (key) DO NOTHING)
               SELECT i.key, s.line AS earlier
               FROM incoming i JOIN pg_temp.import_seen_keys s USING (key)""",
            list(first),
            [row.line for row in first.values()],
        )
        for record in found:
            repeats.append((first.pop(record["key"]), record["earlier"]))
        return list(first.values()), repeats


async def refresh_statistics(conn: asyncpg.Connection, tables: Sequence[str], changed: int) -> None:
    """After a bulk load: ANALYZE ``tables`` when ``changed`` rows are a tenth of one of them or
    more (or it was never analyzed). Autovacuum would, a minute or more later; until then the
    planner takes a freshly filled table for a small one and scans it whole on every write
    (an availability refresh over 10,000 stock rows: 1.1 ms instead of 0.2)."""
    if not changed:
        return
    known = await conn.fetch(
        """SELECT c.relname, c.reltuples FROM pg_class c
           WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY($1::text[])""",
        list(tables),
    )
    stale = [r["relname"] for r in known if r["reltuples"] < 0 or changed * 10 >= r["reltuples"]]
    if not stale:
        return
    try:
        await conn.execute(f"ANALYZE {', '.join(db.checked_identifier(t) for t in stale)}")
    except asyncpg.PostgresError as exc:  # the import itself is done: autovacuum will get to it
        log.warning("statistics not refreshed after an import", tables=stale, error=str(exc))
