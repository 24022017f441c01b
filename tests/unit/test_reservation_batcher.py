import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from omnistock.inventory.reserving import ReservationBatcher, ReserveStock, ServiceStopping
from omnistock.platform.clock import ManualClock
from omnistock.platform.idempotency import StoredAnswer


async def test_requests_still_queued_at_shutdown_are_refused_not_left_hanging() -> None:
    no_database: Any = None  # no worker runs, so nothing reaches the database
    batcher = ReservationBatcher(
        no_database, ManualClock(datetime(2026, 1, 1, tzinfo=UTC)), workers=0
    )
    batcher.start()
    waiting = asyncio.create_task(
        batcher.submit(ReserveStock("ch", (("A", 1),), "web"), "web", "key-1", "fingerprint")
    )
    await asyncio.sleep(0)  # let the request reach the queue
    await batcher.stop(timeout_s=0.01)
    with pytest.raises(ServiceStopping):
        await asyncio.wait_for(waiting, 1)


class NoDatabase:
    """A pool whose connections are never used."""

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[None]:
        yield None


class ScriptedBatcher(ReservationBatcher):
    """Batches that touch no database: each records its SKUs and ends when the test says."""

    def __init__(self, max_batch: int) -> None:
        no_database: Any = NoDatabase()
        super().__init__(
            no_database, ManualClock(datetime(2026, 1, 1, tzinfo=UTC)), max_batch=max_batch
        )
        self.started: list[list[str]] = []
        self.ends: list[asyncio.Event] = []
        self.side_by_side = 0

    async def _run_batch(self, conn: Any, batch: list[Any]) -> None:
        self.started.append([sku for pending in batch for sku, _ in pending.command.lines])
        self.side_by_side = max(self.side_by_side, self._running)
        end = asyncio.Event()
        self.ends.append(end)
        await end.wait()
        for pending in batch:
            pending.answer.set_result(StoredAnswer(201, {}, replayed=False))


def submit(batcher: ReservationBatcher, sku: str) -> asyncio.Task[StoredAnswer]:
    command = ReserveStock("ch", ((sku, 1),), "web")
    return asyncio.create_task(batcher.submit(command, "web", f"key-{sku}", "fingerprint"))


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_many_requests_for_different_skus_run_as_two_batches_side_by_side() -> None:
    batcher = ScriptedBatcher(max_batch=8)
    requests = [submit(batcher, f"S{n}") for n in range(8)]
    batcher.start()
    await settle()
    assert batcher.started == [["S0", "S1", "S2", "S3"], ["S4", "S5", "S6", "S7"]]
    assert batcher.side_by_side == 2
    for end in batcher.ends:
        end.set()
    await asyncio.gather(*requests)
    await batcher.stop()


async def test_requests_for_one_sku_are_not_split_they_would_only_queue_on_its_lock() -> None:
    batcher = ScriptedBatcher(max_batch=8)
    requests = [submit(batcher, "HOT") for _ in range(8)]
    batcher.start()
    await settle()
    assert batcher.started == [["HOT"] * 8]
    batcher.ends[0].set()
    await asyncio.gather(*requests)
    await batcher.stop()


async def test_a_request_for_a_sku_a_running_batch_holds_waits_for_it_and_keeps_its_place() -> None:
    batcher = ScriptedBatcher(max_batch=8)
    batcher.start()
    first = submit(batcher, "A")
    await settle()
    assert batcher.started == [["A"]]
    later = [submit(batcher, sku) for sku in ("A", "B", "C", "D")]
    await settle()
    # B, C and D go alongside; the second A waits for the batch that holds A.
    assert batcher.started == [["A"], ["B", "C", "D"]]
    more = [submit(batcher, sku) for sku in ("E", "F")]
    batcher.ends[0].set()
    batcher.ends[1].set()
    await settle()
    assert batcher.started[2] == ["A", "E", "F"]
    batcher.ends[2].set()
    await asyncio.gather(first, *later, *more)
    await batcher.stop()


async def test_a_few_requests_wait_for_the_running_batch_rather_than_run_alone() -> None:
    batcher = ScriptedBatcher(max_batch=8)
    batcher.start()
    first = submit(batcher, "A")
    await settle()
    later = submit(batcher, "B")  # fewer than a quarter of a batch
    await settle()
    assert batcher.started == [["A"]]
    batcher.ends[0].set()
    await settle()
    assert batcher.started == [["A"], ["B"]]
    batcher.ends[1].set()
    await asyncio.gather(first, later)
    await batcher.stop()


class OutageThenBack:
    """A pool that refuses connections while the database is away, then gives them again."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[None]:
        if self.refusals:
            self.refusals -= 1
            raise ConnectionRefusedError(111, "Connection refused")
        yield None


class OutageBatcher(ReservationBatcher):
    def __init__(self, pool: OutageThenBack) -> None:
        outage: Any = pool
        super().__init__(outage, ManualClock(datetime(2026, 1, 1, tzinfo=UTC)), workers=2)

    async def _run_batch(self, conn: Any, batch: list[Any]) -> None:
        for pending in batch:
            pending.answer.set_result(StoredAnswer(201, {}, replayed=False))

    async def _run_alone(self, pending: Any) -> None:
        # As the real one does with the database away: the request fails on its own.
        pending.answer.set_exception(ConnectionRefusedError(111, "Connection refused"))


async def test_workers_outlive_a_database_outage_and_serve_once_it_is_back() -> None:
    batcher = OutageBatcher(OutageThenBack(refusals=6))
    batcher.start()
    try:
        # Each worker meets the outage several times: every request is answered (refused),
        # none is left waiting on a worker that died.
        for n in range(6):
            with pytest.raises(ConnectionRefusedError):
                await asyncio.wait_for(submit(batcher, f"DOWN-{n}"), 1)
        back = await asyncio.wait_for(submit(batcher, "UP"), 1)
        assert back.status == 201
        assert all(not worker.done() for worker in batcher._workers)
    finally:
        await batcher.stop(timeout_s=0.1)
