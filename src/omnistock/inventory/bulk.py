"""Bulk import of a full stock snapshot (the file format is in ``snapshot``).

Each row is checked on its own; a bad row is reported with its line number and not applied, the
good ones are. Rows are applied in chunks, one transaction each, under the SKU locks and through
the path every stock change takes (``effects.commit_changes``): the movement ledger (reason
``import``), availability and its events in the outbox. A row counted below the units held at
its location goes through ``service.count_stock`` instead, in a transaction of its own, which
releases holds and reports the shortage. A crash loses at most the chunk in flight; importing
the same snapshot again changes nothing, since the rows are absolute.

Memory stays flat whatever the file's size: one chunk of rows is held at a time, and the
(sku, location) pairs already seen, which catch a pair repeated within the file, live in the
database (``imports.SeenKeys``).
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg

from omnistock.inventory import repository, service
from omnistock.inventory.domain import MovementReason, StockLevel
from omnistock.inventory.effects import commit_changes
from omnistock.inventory.repository import Change
from omnistock.inventory.snapshot import SnapshotRow, read_rows
from omnistock.platform import db, imports
from omnistock.platform.clock import Clock
from omnistock.platform.imports import MAX_ERRORS, Format

CHUNK_ROWS = 5_000  # and at most imports.MAX_CHUNK_KEYS SKUs, for their locks
COUNT_SOURCE_PREFIX = "import:"


@dataclass(slots=True, kw_only=True)
class ImportReport(imports.ImportReport):
    """What an import did. ``rows`` = ``applied`` + ``unchanged`` + ``rejected``; ``shortages``
    counts the applied rows that were below the units held and released holds to fit."""

    import_id: str
    source: str
    applied: int = 0
    unchanged: int = 0
    shortages: int = 0


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
    ``imports.ImportRefused``, before anything is applied, when the file cannot be read."""
    started = time.perf_counter()
    report = ImportReport(import_id=uuid.uuid4().hex, source=source, max_errors=max_errors)
    async with pool.acquire() as conn, imports.SeenKeys(conn) as seen:
        job = _Job(conn, clock, report, seen)
        locations = frozenset(
            r["location_id"] for r in await conn.fetch("SELECT location_id FROM locations")
        )
        rows = read_rows(lines, fmt, locations)
        async for chunk in imports.chunks(
            rows, report, max_rows=chunk_rows, lock_key=lambda row: row.sku
        ):
            shortages = await job.apply_chunk(chunk)
            await job.apply_shortages(shortages)
    report.finish(started)
    return report


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
    """One import's connection, clock and report, the items it has seen and the sequence of
    its counts."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        clock: Clock,
        report: ImportReport,
        seen: imports.SeenKeys,
    ) -> None:
        self.conn, self.clock, self.report, self.seen = conn, clock, report, seen
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
        rows, repeats = await self.seen.first_occurrences(chunk, _item_key)
        for row, earlier_line in repeats:
            self.report.reject(row.line, _repeat_message(row, earlier_line))
        return rows

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


def _item_key(row: SnapshotRow) -> str:
    return f"{row.sku}\x1f{row.location_id}"  # neither a SKU nor a location id has a \x1f


def _repeat_message(row: SnapshotRow, earlier_line: int) -> str:
    return f"sku {row.sku!r} at {row.location_id!r} repeats line {earlier_line}"
