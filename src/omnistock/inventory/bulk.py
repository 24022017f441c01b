"""Bulk import of a full stock snapshot (the file format is in ``snapshot``).

Each row is checked on its own; a bad row is reported with its line number and not applied, the
good ones are. Rows are applied in chunks, one transaction each, under the SKU locks and through
the path every stock change takes (``effects.commit_changes``): the movement ledger (reason
``import``), availability and its events in the outbox. A row counted below the units held at
its location goes through ``service.count_stock`` instead, in a transaction of its own, which
releases holds and reports the shortage. A crash loses at most the chunk in flight; importing
the same snapshot again changes nothing, since the rows are absolute.

Memory stays flat whatever the file's size: one chunk of rows is held at a time, and the
(sku, location) pairs already seen, which catch a pair repeated within the file, live in a
temporary table of the import's connection rather than in the process.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from omnistock.inventory import repository, service
from omnistock.inventory.domain import MovementReason, StockLevel
from omnistock.inventory.effects import commit_changes
from omnistock.inventory.repository import Change
from omnistock.inventory.snapshot import Format, RowError, SnapshotRow, read_rows
from omnistock.platform import db
from omnistock.platform.clock import Clock

CHUNK_ROWS = 5_000
# Each SKU lock takes a slot in PostgreSQL's shared lock table (max_locks_per_transaction ×
# max_connections, 6,400 with the defaults): a chunk stays well below that.
CHUNK_SKUS = 2_000
MAX_ERRORS = 1_000
COUNT_SOURCE_PREFIX = "import:"


@dataclass(slots=True)
class ImportReport:
    """What an import did. ``rows`` = ``applied`` + ``unchanged`` + ``rejected``; ``shortages``
    counts the applied rows that were below the units held and released holds to fit."""

    import_id: str
    source: str
    rows: int = 0
    applied: int = 0
    unchanged: int = 0
    rejected: int = 0
    shortages: int = 0
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
        self._keep_first_errors()
        self.seconds = round(time.perf_counter() - started, 3)

    def as_dict(self) -> dict[str, Any]:
        return {
            "import_id": self.import_id,
            "source": self.source,
            "rows": self.rows,
            "applied": self.applied,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "shortages": self.shortages,
            "seconds": self.seconds,
            "errors": [{"line": e.line, "error": e.error} for e in self.errors],
            "errors_truncated": self.rejected > len(self.errors),
        }


async def import_snapshot(
    pool: asyncpg.Pool,
    clock: Clock,
    lines: AsyncIterator[bytes],
    fmt: Format,
    source: str,
    *,
    chunk_rows: int = CHUNK_ROWS,
    max_errors: int = MAX_ERRORS,
) -> ImportReport:
    """Apply a full snapshot given as its physical lines (terminators allowed). Raises
    ``snapshot.SnapshotRefused``, before anything is applied, when the file cannot be read."""
    started = time.perf_counter()
    report = ImportReport(uuid.uuid4().hex, source, max_errors=max_errors)
    async with pool.acquire() as conn:
        job = _Job(conn, clock, report)
        await _open_seen_items(conn)
        try:
            locations = frozenset(
                r["location_id"] for r in await conn.fetch("SELECT location_id FROM locations")
            )
            async for chunk in _chunks(read_rows(lines, fmt, locations), report, chunk_rows):
                shortages = await job.apply_chunk(chunk)
                await job.apply_shortages(shortages)
        finally:
            await _close_seen_items(conn)
    report.finish(started)
    return report


async def _chunks(
    rows: AsyncIterator[SnapshotRow | RowError], report: ImportReport, chunk_rows: int
) -> AsyncIterator[list[SnapshotRow]]:
    """Good rows in chunks of at most ``chunk_rows`` rows and ``CHUNK_SKUS`` SKUs; bad ones go
    into the report."""
    chunk: list[SnapshotRow] = []
    skus: set[str] = set()
    async for row in rows:
        report.rows += 1
        if isinstance(row, RowError):
            report.reject(row.line, row.error)
            continue
        if len(chunk) >= chunk_rows or (row.sku not in skus and len(skus) >= CHUNK_SKUS):
            yield chunk
            chunk, skus = [], set()
        chunk.append(row)
        skus.add(row.sku)
    if chunk:
        yield chunk


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    changes: list[Change]
    shortages: list[SnapshotRow]
    unchanged: int


def plan_chunk(
    rows: Sequence[SnapshotRow],
    levels: dict[tuple[str, str], StockLevel],
    source: str,
    reference: str,
) -> ChunkPlan:
    """The movement that takes each item to its counted figure; an item counted below what is
    held at its location is left for a count, which releases holds."""
    changes: list[Change] = []
    shortages: list[SnapshotRow] = []
    unchanged = 0
    for row in rows:
        level = levels.get(row.item, StockLevel(row.sku, row.location_id))
        if row.on_hand == level.on_hand:
            unchanged += 1
        elif row.on_hand < level.held:
            shortages.append(row)
        else:
            changes.append(
                Change(
                    row.sku,
                    row.location_id,
                    on_hand=row.on_hand - level.on_hand,
                    movement_reason=MovementReason.IMPORT.value,
                    source=source,
                    reference=reference,
                )
            )
    return ChunkPlan(changes, shortages, unchanged)


class _Job:
    """One import's connection, clock and report, and the sequence of its counts."""

    def __init__(self, conn: asyncpg.Connection, clock: Clock, report: ImportReport) -> None:
        self.conn, self.clock, self.report = conn, clock, report
        self.count_source = COUNT_SOURCE_PREFIX + report.source
        self._sequence: int | None = None

    async def apply_chunk(self, chunk: list[SnapshotRow]) -> list[SnapshotRow]:
        """One transaction: the chunk's movements, availability and events. Returns the rows
        counted below held stock, for ``apply_shortages``."""
        async with self.conn.transaction():
            rows = await self._first_occurrences(chunk)
            await repository.lock_skus(self.conn, {r.sku for r in rows})
            levels = await repository.levels(
                self.conn, sorted({r.sku for r in rows}), sorted({r.location_id for r in rows})
            )
            plan = plan_chunk(rows, levels, self.report.source, self.report.import_id)
            await commit_changes(self.conn, self.clock, plan.changes)
        self.report.applied += len(plan.changes)
        self.report.unchanged += plan.unchanged
        return plan.shortages

    async def apply_shortages(self, rows: list[SnapshotRow]) -> None:
        """Each as an absolute count in its own transaction: holds are released, newest first,
        and a shortage event goes out."""
        for row in rows:
            sequence = await self._next_sequence()
            result = await db.transaction_with_retries(
                self.conn,
                functools.partial(self._count, row, sequence),
                (repository.LockContention,),
            )
            if result.status == "stale":
                self.report.reject(row.line, "a later import from the same source counted it")
                continue
            self.report.applied += 1
            self.report.shortages += 1

    async def _count(
        self, row: SnapshotRow, sequence: int, conn: asyncpg.Connection
    ) -> service.CountResult:
        return await service.count_stock(
            conn,
            self.clock,
            source=self.count_source,
            sequence=sequence,
            sku=row.sku,
            location_id=row.location_id,
            on_hand=row.on_hand,
        )

    async def _first_occurrences(self, chunk: list[SnapshotRow]) -> list[SnapshotRow]:
        """The rows whose item the file has not named before; the repeats are rejected."""
        first: dict[tuple[str, str], SnapshotRow] = {}
        for row in chunk:
            if (earlier := first.get(row.item)) is not None:
                self.report.reject(row.line, _repeat_message(row, earlier.line))
            else:
                first[row.item] = row
        by_line = {r.line: r for r in first.values()}
        for line, earlier_line in await _record_seen_items(self.conn, list(by_line.values())):
            self.report.reject(line, _repeat_message(by_line.pop(line), earlier_line))
        return list(by_line.values())

    async def _next_sequence(self) -> int:
        """An import's counts carry a source of their own (``import:<source>``), so that they
        never move the sequence of a WMS or till counting under the plain name. Within it the
        sequence grows: the clock in microseconds, or past the last one when that is ahead."""
        if self._sequence is None:
            last = await self.conn.fetchval(
                "SELECT coalesce(max(last_sequence), 0) FROM source_sequences WHERE source = $1",
                self.count_source,
            )
            self._sequence = max(int(self.clock.now().timestamp() * 1_000_000), last)
        self._sequence += 1
        return self._sequence


def _repeat_message(row: SnapshotRow, earlier_line: int) -> str:
    return f"sku {row.sku!r} at {row.location_id!r} repeats line {earlier_line}"


# The (sku, location) pairs seen so far: a temporary table of the import's connection.


async def _open_seen_items(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """DROP TABLE IF EXISTS pg_temp.snapshot_items;
           CREATE TEMPORARY TABLE snapshot_items (
               sku text NOT NULL,
               location_id text NOT NULL,
               line integer NOT NULL,
               PRIMARY KEY (sku, location_id))"""
    )


async def _close_seen_items(conn: asyncpg.Connection) -> None:
    # Cleanup only: a connection that broke takes its temporary table with it.
    if not conn.is_closed():
        with suppress(asyncpg.PostgresError, asyncpg.InterfaceError):
            await conn.execute("DROP TABLE IF EXISTS pg_temp.snapshot_items")


async def _record_seen_items(
    conn: asyncpg.Connection, rows: list[SnapshotRow]
) -> list[tuple[int, int]]:
    """Record the rows' items; return (line, earlier line) for those an earlier chunk named.
    All parts of one statement see the table as it was before it, so the join finds only the
    earlier chunks' rows."""
    found = await conn.fetch(
        """WITH incoming AS (
               SELECT * FROM unnest($1::text[], $2::text[], $3::int[]) AS i(sku, location_id, line)
           ), added AS (
               INSERT INTO pg_temp.snapshot_items (sku, location_id, line)
               SELECT sku, location_id, line FROM incoming
               ON CONFLICT (sku, location_id) DO NOTHING)
           SELECT i.line, s.line AS earlier
           FROM incoming i JOIN pg_temp.snapshot_items s USING (sku, location_id)""",
        [r.sku for r in rows],
        [r.location_id for r in rows],
        [r.line for r in rows],
    )
    return [(r["line"], r["earlier"]) for r in found]
