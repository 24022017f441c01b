"""Concurrent reservation requests sharing transactions (group commit)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from omnistock.inventory.reserving.store import AnswerKey
from omnistock.inventory.reserving.transaction import (
    Answer,
    ReserveStock,
    reserve_many,
)
from omnistock.platform import idempotency
from omnistock.platform.clock import Clock
from omnistock.platform.problems import Problem

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Pending:
    command: ReserveStock
    key: AnswerKey
    skus: frozenset[str]
    answer: asyncio.Future[idempotency.StoredAnswer]


class ReservationBatcher:
    """Runs concurrent reservation requests through shared transactions (group commit).

    Each request keeps its own Idempotency-Key semantics: its answer is stored in the batch's
    transaction; a refused request stores nothing. Should anything about a batch go wrong (a
    key racing with another replica, an unexpected error), its requests are run one by one,
    each in a transaction of its own, so no request is failed by another.

    Several batches run at once when their SKUs differ: while one is in the database the next
    is planned. A request for a SKU that a running batch holds waits for that batch to end
    instead of joining another one that would only queue on the SKU's lock (in arrival order:
    it goes into the next batch before anything that came after it).
    """

    def __init__(
        self, pool: asyncpg.Pool, clock: Clock, workers: int = 4, max_batch: int = 256
    ) -> None:
        self._pool, self._clock = pool, clock
        self._waiting: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._running = 0
        self._busy: dict[str, int] = {}  # SKU -> running batches that hold it
        self._workers_count, self._max_batch = workers, max_batch
        self._workers: list[asyncio.Task[None]] = []
        self.batches = 0
        self.requests = 0

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"reservation-batcher-{n}")
            for n in range(self._workers_count)
        ]

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Finish what was submitted (graceful shutdown), then stop the workers."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._waiting:  # what did not make it in time is refused, not left hanging
            pending = self._waiting.popleft()
            if not pending.answer.done():
                pending.answer.set_exception(ServiceStopping())

    async def submit(
        self, command: ReserveStock, principal: str, key: str, fingerprint: str
    ) -> idempotency.StoredAnswer:
        """The stored or new answer; raises a refusal (OutOfStock, ...) for this request."""
        answer: asyncio.Future[idempotency.StoredAnswer] = (
            asyncio.get_running_loop().create_future()
        )
        skus = frozenset(sku for sku, _ in command.lines)
        answer_key = AnswerKey(principal, key, fingerprint)
        self._waiting.append(_Pending(command, answer_key, skus, answer))
        self._idle.clear()
        self._wake.set()
        return await answer

    def _next_batch(self) -> list[_Pending]:
        """The next batch: the oldest waiting requests whose SKUs no running batch holds.

        A second batch runs alongside a first only when it is worth it (a small batch costs
        more than it overlaps): with nothing running, many requests are split in two halves
        that do not share a SKU, so that one is planned while the other is in the database."""
        waiting, busy, most = self._waiting, self._busy, self._max_batch
        if self._running and len(waiting) < most // 4:
            return []  # a few more wait for the running batch to end, and go together
        batch: list[_Pending] = []
        held_back: list[_Pending] = []
        while waiting and len(batch) < most and len(held_back) < 4 * most:
            pending = waiting.popleft()
            if busy and not busy.keys().isdisjoint(pending.skus):
                held_back.append(pending)
            else:
                batch.append(pending)
        if not self._running and len(batch) >= max(2, most // 2):
            half = len(batch) // 2
            first = {sku for pending in batch[:half] for sku in pending.skus}
            alongside = sum(1 for pending in batch[half:] if first.isdisjoint(pending.skus))
            if alongside >= max(1, most // 4):
                held_back = batch[half:]  # nothing runs, so nothing was held back
                del batch[half:]
        waiting.extendleft(reversed(held_back))
        return batch

    async def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                # One connection for as long as batches keep coming: handing it back to the
                # pool between them costs a round trip (its reset) every time.
                async with self._pool.acquire() as conn:
                    while batch:
                        with self._holding(batch):
                            if not await self._run(conn, batch):
                                break  # the pool checks the connection, replaces a broken one
                        batch = self._next_batch()
            except Exception:
                # No connection to be had, or a broken one not taken back (the database went
                # away): this worker must live on, or reservations would wait for ever once
                # every worker had met an outage. Requests not answered get their own try.
                log.warning("reservation worker lost the database", exc_info=True)
                unanswered = [pending for pending in batch if not pending.answer.done()]
                if unanswered:
                    with self._holding(unanswered):
                        for pending in unanswered:
                            await self._run_alone(pending)

    @contextlib.contextmanager
    def _holding(self, batch: list[_Pending]) -> Iterator[None]:
        """The batch's SKUs are busy while it runs; then what waited for them may go."""
        skus = {sku for pending in batch for sku in pending.skus}
        for sku in skus:
            self._busy[sku] = self._busy.get(sku, 0) + 1
        self._running += 1
        try:
            yield
        finally:
            for sku in skus:
                if self._busy[sku] == 1:
                    del self._busy[sku]
                else:
                    self._busy[sku] -= 1
            self._running -= 1
            if self._waiting:
                self._wake.set()
            elif not self._running:
                self._idle.set()

    async def _run(self, conn: asyncpg.Connection, batch: list[_Pending]) -> bool:
        """Whether the batch ran; if not, its requests were run one by one."""
        try:
            await self._run_batch(conn, batch)
            return True
        except Exception:
            log.warning(
                "reservation batch failed, running its requests one by one",
                size=len(batch),
                exc_info=True,
            )
            for pending in batch:
                if not pending.answer.done():
                    await self._run_alone(pending)
            return False
        except asyncio.CancelledError:  # stopped mid-batch: refused, not left hanging
            for pending in batch:
                if not pending.answer.done():
                    pending.answer.set_exception(ServiceStopping())
            raise

    async def _run_batch(self, conn: asyncpg.Connection, batch: list[_Pending]) -> None:
        unique: dict[tuple[str, str], _Pending] = {}
        repeats: list[_Pending] = []
        for pending in batch:
            slot = (pending.key.principal, pending.key.key)
            if slot in unique:
                repeats.append(pending)  # answered from the stored answer after this batch
            else:
                unique[slot] = pending
        firsts = list(unique.values())
        # A key stored meanwhile by another transaction fails the batch's INSERT, which rolls
        # the batch back: its requests then run one by one.
        async with conn.transaction():
            answers = await reserve_many(
                conn, self._clock, [p.command for p in firsts], [p.key for p in firsts]
            )
        self.batches += 1
        for pending, answer in zip(firsts, answers, strict=True):
            if not isinstance(answer, idempotency.StoredAnswer | Problem):
                self.requests += 1
            _settle(pending, answer)
        for pending in repeats:
            await self._run_alone(pending)

    async def _run_alone(self, pending: _Pending) -> None:
        async def effect(conn: asyncpg.Connection) -> tuple[int, Any]:
            (outcome,) = await reserve_many(conn, self._clock, [pending.command])
            if isinstance(outcome, Exception):
                raise outcome
            assert isinstance(outcome, dict), "no key was given, so nothing was replayed"
            return 201, outcome

        key = pending.key
        try:
            answer = await idempotency.run_once(
                self._pool, key.principal, key.key, key.fingerprint, effect
            )
        except Exception as exc:
            if not pending.answer.done():
                pending.answer.set_exception(exc)
            return
        if not pending.answer.done():
            pending.answer.set_result(answer)


class ServiceStopping(Exception):
    """The service is shutting down: the client should retry (with the same key) elsewhere."""


def _settle(pending: _Pending, outcome: Answer) -> None:
    if pending.answer.done():
        return
    if isinstance(outcome, Exception):
        pending.answer.set_exception(outcome)
    elif isinstance(outcome, idempotency.StoredAnswer):
        pending.answer.set_result(outcome)
    else:
        pending.answer.set_result(idempotency.StoredAnswer(201, outcome, replayed=False))
