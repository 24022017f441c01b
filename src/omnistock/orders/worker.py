"""The saga's worker: takes the orders whose next step is due, runs each step's calls with no
transaction open, and records the outcome. Record intent (the lease) → call → record outcome:
no row lock is held across a call to another service."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg
import structlog
from prometheus_client import Counter

from omnistock.orders import lifecycle, saga, service
from omnistock.orders.participants import Participants
from omnistock.orders.settings import OrdersSettings
from omnistock.platform.client import CallFailed
from omnistock.platform.clock import Clock
from omnistock.platform.ratelimit import ConcurrencyLimit
from omnistock.platform.runtime import BackgroundJob, ServiceRuntime

log = structlog.get_logger(__name__)

STEPS_RUN = Counter(
    "omnistock_orders_saga_steps_total", "Saga steps run, by outcome", ["step", "outcome"]
)


class SagaWorker:
    def __init__(
        self,
        participants: Participants,
        clock: Clock,
        own: OrdersSettings,
        intake: ConcurrencyLimit | None = None,
    ) -> None:
        """``intake``: the placements under way in this replica, which the saga yields to."""
        self.participants = participants
        self.clock = clock
        self.own = own
        self.intake = intake
        self._busy_since: datetime | None = None
        self._carried: set[asyncio.Task[None]] = set()
        self.policies = service.Policies(
            own.retry_policy(), own.compensation_policy(), own.payment_poll()
        )
        # Set by the API when it places or cancels an order: the step starts at once rather
        # than at the next poll.
        self.wakeup = asyncio.Event()

    def job(self) -> BackgroundJob:
        async def saga_worker(runtime: ServiceRuntime, stop: asyncio.Event) -> None:
            await self.run(runtime.pool, stop)

        return saga_worker

    def room(self) -> int:
        """How many orders the saga may carry now: fewer while checkout is busy, for at most
        ``saga_gives_way_at_most_s`` of a rush."""
        own = self.own
        busy_at, intake = own.intake_busy_at, self.intake
        if not (busy_at and intake is not None and intake.load() >= busy_at):
            self._busy_since = None
            return own.saga_in_flight
        now = self.clock.now()
        if self._busy_since is None:
            self._busy_since = now
        if now - self._busy_since >= timedelta(seconds=own.saga_gives_way_at_most_s):
            return own.saga_in_flight
        return min(own.saga_in_flight_when_busy, own.saga_in_flight)

    async def run(self, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
        """Keep up to ``room()`` orders moving: claim due steps whenever there is room, each
        order followed through the steps that come due at once, rather than a batch at a time
        waiting for its slowest order. On stop, the steps under way are let finish."""
        in_flight = self._carried = set()
        try:
            while not stop.is_set():
                room = self.room()
                wanted = min(room - len(in_flight), self.own.worker_batch_size)
                claims = await self._claim(pool, wanted)
                for claim in claims:
                    task = asyncio.create_task(self._follow(pool, claim, stop))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                full = len(in_flight) >= room
                if claims and len(claims) == wanted and not full:
                    continue  # more may be due
                await self._rest(stop, set(in_flight) if full else set())
        finally:
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _rest(self, stop: asyncio.Event, full: set[asyncio.Task[None]]) -> None:
        """Until a poll interval passes, an order is placed or cancelled, or (with every slot
        taken) an order leaves the worker."""
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self.wakeup.wait())]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait(
                [*waiters, *full],
                timeout=self.own.worker_interval_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        for waiter in waiters:
            waiter.cancel()
        self.wakeup.clear()

    async def _claim(self, pool: asyncpg.Pool, limit: int) -> list[service.Claim]:
        if limit <= 0:
            return []
        try:
            async with pool.acquire() as conn, conn.transaction():
                return await service.claim_due(conn, self.clock, self.own.lease, limit)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("claiming saga steps failed", error=str(exc))
            return []

    async def _follow(self, pool: asyncpg.Pool, claim: service.Claim, stop: asyncio.Event) -> None:
        """The claimed step, then each step that follows at once, under one lease; once the
        worker is stopping, the order is let go after the step under way."""
        following: service.Claim | None = claim
        while following is not None:
            current = following
            try:
                following = await self._advance(pool, current, stop)
            except Exception:
                # Nobody awaits this task: said here, or it would be lost. The lease lapses and
                # a worker takes the step again; the other orders go on meanwhile.
                log.exception("saga step crashed", order_id=current.order.order_id)
                return

    async def _advance(
        self, pool: asyncpg.Pool, claim: service.Claim, stop: asyncio.Event
    ) -> service.Claim | None:
        if claim.step in saga.LIFECYCLE:
            try:
                async with pool.acquire() as conn:
                    order = await lifecycle.step_context(conn, claim.order, claim.step)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("reading a step's context failed", error=str(exc))
                return None  # the lease lapses and the step is tried again
            claim = replace(claim, order=order)
        outcome = await self._run_step(claim)
        STEPS_RUN.labels(claim.step, type(outcome).__name__.lower()).inc()
        log.info(
            "saga step",
            order_id=claim.order.order_id,
            step=claim.step,
            outcome=type(outcome).__name__,
        )
        try:
            # Beyond the room there is now (checkout got busy), the order is let go after its
            # step, as on stop: taken again once there is room.
            carry_on = not stop.is_set() and len(self._carried) <= self.room()
            carry_on_for = self.own.lease if carry_on else None
            async with pool.acquire() as conn, conn.transaction():
                return await service.record_outcome(
                    conn, self.clock, claim, outcome, self.policies, carry_on_for=carry_on_for
                )
        except Exception as exc:
            # Not lost: the lease lapses and the step runs again under the same idempotency
            # keys; an order that keeps failing here shows in `omnistock orders stuck`. One
            # such order must not stop the saga of every other.
            log.exception(
                "recording a saga step failed", order_id=claim.order.order_id, error=str(exc)
            )
            return None

    async def _run_step(self, claim: service.Claim) -> saga.Outcome:
        _, step, compensating = saga.step_named(claim.step)
        action = step.compensation if compensating and step.compensation else step.action
        try:
            # The whole step (it may make several calls) within its share of the lease.
            async with asyncio.timeout(self.own.step_timeout_s * 3):
                return await action(self.participants, claim.order)
        except (CallFailed, TimeoutError) as exc:
            return saga.Failed(f"{type(exc).__name__} {exc}".strip())
        except (KeyError, ValueError) as exc:
            # An answer we cannot read: counted as a failed try, never as success.
            log.exception("unreadable answer", order_id=claim.order.order_id, step=claim.step)
            return saga.Failed(f"unreadable answer: {exc}")
