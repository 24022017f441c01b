"""Bulk import of a full stock snapshot (the file format is in ``snapshot``).

Each row is checked on its own; a bad row is reported with its line number and not applied, the
good ones are. Rows are applied in chunks, one transaction each, under the SKU locks and through
the path every stock change takes (``effects.commit_changes``): the movement ledger (reason
``import``), availability and its events in the outbox. A row counted below the units held at
its location goes through ``service.count_stock`` instead, in a transaction of its own, which
releases holds and reports the shortage. A crash loses at most the chunk in flight; importing
the same snapshot again changes nothing, since the rows are absolute.

A snapshot is a count at one moment, and it reaches us later (a WMS exports at night, the file
travels): stock kept moving meanwhile. Given that moment (``as_of``), each row is taken as the
count then, and what moved the item since (sales, receipts, shipments) is applied on top of it
rather than lost; a row whose item was counted again after ``as_of`` (an absolute count, a
snapshot counted later, whenever it was imported) is ``stale`` and changes nothing, and one
that what left since would take below zero is rejected. The movements an import writes carry
its ``as_of`` as the moment they count at. Without ``as_of`` a snapshot is a count as of its
import.

Memory stays flat whatever the file's size: one chunk of rows is held at a time, and the
(sku, location) pairs already seen, which catch a pair repeated within the file, live in the
database (``imports.SeenKeys``).
"""

from __future__ import annotations

import dataclasses
import functools
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

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
# Movements that set a figure rather than move units: after a snapshot's moment, they know better.
COUNTS = [MovementReason.COUNT.value, MovementReason.IMPORT.value]


@dataclass(slots=True, kw_only=True)
class ImportReport(imports.ImportReport):
    """What an import did. ``rows`` = ``applied`` + ``unchanged`` + ``stale`` + ``rejected``;
    ``shortages`` counts the applied rows that were below the units held and released holds to
    fit; ``stale`` the rows of items counted again after the snapshot's ``as_of``."""

    import_id: str
    source: str
    as_of: str | None = None
    applied: int = 0
    unchanged: int = 0
    stale: int = 0
    shortages: int = 0


async def import_snapshot(
    pool: asyncpg.Pool,
    clock: Clock,
    lines: AsyncIterator[bytes],
    fmt: Format,
    source: str,
    *,
    as_of: datetime | None = None,
    chunk_rows: int = CHUNK_ROWS,
    max_errors: int = MAX_ERRORS,
) -> ImportReport:
    """Apply a full snapshot given as its physical lines (terminators allowed), counted at
    ``as_of`` (aware; by default now). Raises ``imports.ImportRefused``, before anything is
    applied, when the file cannot be read."""
    started = time.perf_counter()
    report = ImportReport(
        import_id=uuid.uuid4().hex,
        source=source,
        as_of=as_of.isoformat() if as_of is not None else None,
        max_errors=max_errors,
    )
    async with pool.acquire() as conn, imports.SeenKeys(conn) as seen:
        job = _Job(conn, clock, report, seen, as_of)
        locations = frozenset(
            r["location_id"] for r in await conn.fetch("SELECT location_id FROM locations")
        )
        rows = read_rows(lines, fmt, locations)
        async for chunk in imports.chunks(
            rows, report, max_rows=chunk_rows, lock_key=lambda row: row.sku
        ):
            shortages = await job.apply_chunk(chunk)
            await job.apply_shortages(shortages)
        await imports.refresh_statistics(conn, ["stock", "availability"], report.applied)
    report.finish(started)
    return report


@dataclass(frozen=True, slots=True)
class Since:
    """What happened to an item after a snapshot's ``as_of``: units moved by deltas, and
    whether it was counted again."""

    moved: int
    recounted: bool

    def applied_to(self, counted: int) -> int | None:
        """The figure counted then, with what moved since; None when a later count stands or
        what left since would take it below zero."""
        if self.recounted or counted + self.moved < 0:
            return None
        return counted + self.moved


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    changes: list[Change]
    shortages: list[SnapshotRow]
    unchanged: int
    stale: list[SnapshotRow] = dataclasses.field(default_factory=list)
    below_zero: list[tuple[SnapshotRow, int]] = dataclasses.field(default_factory=list)


def plan_chunk(
    rows: Sequence[SnapshotRow],
    levels: dict[tuple[str, str], StockLevel],
    source: str,
    reference: str,
    since: dict[tuple[str, str], Since] | None = None,
    counted_at: datetime | None = None,
) -> ChunkPlan:
    """The movement that takes each item to its counted figure (with ``since``: the count plus
    what moved after it); an item counted below what is held at its location is left for a
    count, which releases holds (its row as counted: the count works out what moved since under
    locks of its own)."""
    changes: list[Change] = []
    shortages: list[SnapshotRow] = []
    stale: list[SnapshotRow] = []
    below_zero: list[tuple[SnapshotRow, int]] = []
    unchanged = 0
    for counted in rows:
        row = counted
        if since is not None and (later := since.get(row.item)) is not None:
            if (on_hand := later.applied_to(row.on_hand)) is None:
                if later.recounted:
                    stale.append(row)
                else:
                    below_zero.append((row, later.moved))
                continue
            row = dataclasses.replace(row, on_hand=on_hand)
        level = levels.get(row.item, StockLevel(row.sku, row.location_id))
        if row.on_hand == level.on_hand:
            unchanged += 1
        elif row.on_hand < level.held:
            shortages.append(counted)
        else:
            changes.append(
                Change(
                    row.sku,
                    row.location_id,
                    on_hand=row.on_hand - level.on_hand,
                    movement_reason=MovementReason.IMPORT.value,
                    source=source,
                    reference=reference,
                    counted_at=counted_at,
                )
            )
    return ChunkPlan(changes, shortages, unchanged, stale, below_zero)


class _Job:
    """One import's connection, clock and report, the items it has seen and the sequence of
    its counts."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        clock: Clock,
        report: ImportReport,
        seen: imports.SeenKeys,
        as_of: datetime | None = None,
    ) -> None:
        self.conn, self.clock, self.report, self.seen = conn, clock, report, seen
        self.as_of = as_of
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
            since = await self._since(self.conn, rows) if self.as_of is not None else None
            plan = plan_chunk(
                rows, levels, self.report.source, self.report.import_id, since, self.as_of
            )
            await commit_changes(self.conn, self.clock, plan.changes)
        self.report.applied += len(plan.changes)
        self.report.unchanged += plan.unchanged
        self.report.stale += len(plan.stale)
        for row, moved in plan.below_zero:
            self.report.reject(row.line, _short_message(row, moved))
        return plan.shortages

    async def _since(
        self, conn: asyncpg.Connection, rows: Sequence[SnapshotRow]
    ) -> dict[tuple[str, str], Since]:
        """What moved the rows' items after ``as_of``, read under their SKU locks."""
        found = await conn.fetch(
            # One probe of the ledger per item (an aggregate in LATERAL is never folded into a
            # join): the ledger is the largest table there is, never to be hashed whole. A
            # count or snapshot movement counts as of its counted_at (a snapshot imported later
            # than it was taken), the rest as of when they happened.
            """SELECT w.sku, w.location_id, m.moved, m.recounted
               FROM unnest($1::text[], $2::text[]) AS w(sku, location_id),
               LATERAL (
                   SELECT count(*) AS n,
                          coalesce(sum(quantity) FILTER (WHERE reason <> ALL($4::text[])), 0)
                              AS moved,
                          coalesce(bool_or(reason = ANY($4::text[])
                                           AND coalesce(counted_at, occurred_at) > $3), false)
                              AS recounted
                   FROM stock_movements
                   WHERE sku = w.sku AND location_id = w.location_id AND occurred_at > $3) m
               WHERE m.n > 0""",
            [r.sku for r in rows],
            [r.location_id for r in rows],
            self.as_of,
            COUNTS,
        )
        return {(r["sku"], r["location_id"]): Since(r["moved"], r["recounted"]) for r in found}

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
            if isinstance(result, Since):
                if result.recounted:
                    self.report.stale += 1
                else:
                    self.report.reject(row.line, _short_message(row, result.moved))
                continue
            if result.status == "stale":
                self.report.reject(row.line, "a later import from the same source counted it")
                continue
            self.report.applied += 1
            self.report.shortages += 1

    async def _count(
        self, row: SnapshotRow, sequence: int, conn: asyncpg.Connection
    ) -> service.CountResult | Since:
        """The row as an absolute count. With ``as_of``, what moved the item since is worked
        out again under the count's own locks (a sale after the chunk stays sold); an item
        counted again since, or one the moves would take below zero, is left alone: what moved
        is returned instead."""
        on_hand = row.on_hand
        if self.as_of is not None:
            # The locks the count takes, in its order; it takes them again, which holds.
            held_with = await repository.skus_held_with(conn, row.sku, row.location_id)
            await repository.lock_skus(conn, {row.sku} | held_with)
            later = (await self._since(conn, [row])).get(row.item)
            if later is not None:
                if (now := later.applied_to(row.on_hand)) is None:
                    return later
                on_hand = now
        return await service.count_stock(
            conn,
            self.clock,
            source=self.count_source,
            sequence=sequence,
            sku=row.sku,
            location_id=row.location_id,
            on_hand=on_hand,
            counted_at=self.as_of,
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


def _short_message(row: SnapshotRow, moved: int) -> str:
    return (
        f"on_hand {row.on_hand} as of the snapshot, but {-moved} units left "
        f"{row.location_id} since: the count is short"
    )
