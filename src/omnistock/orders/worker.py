"""The saga's worker: takes the orders whose next step is due, runs each step's calls with no
transaction open, and records the outcome. Record intent (the lease) → call → record outcome:
no row lock is held across a call to another service."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import asyncpg
import structlog
from prometheus_client import Counter

from omnistock.orders import lifecycle, saga, service
from omnistock.orders.participants import Participants
from omnistock.orders.settings import OrdersSettings
from omnistock.platform.client import CallFailed
from omnistock.platform.clock import Clock
from omnistock.platform.runtime import BackgroundJob, ServiceRuntime

log = structlog.get_logger(__name__)

STEPS_RUN = Counter(
    "omnistock_orders_saga_steps_total", "Saga steps run, by outcome", ["step", "outcome"]
)


class SagaWorker:
    def __init__(self, participants: Participants, clock: Clock, own: OrdersSettings) -> None:
        self.participants = participants
        self.clock = clock
        self.own = own
        self.policies = service.Policies(
            own.retry_policy(), own.compensation_policy(), own.payment_poll()
        )
        # Set by the API when it places or cancels an order: the step starts at once rather
        # than at the next poll.
        self.wakeup = asyncio.Event()

    def job(self) -> BackgroundJob:
        async def saga_worker(runtime: ServiceRuntime, stop: asyncio.Event) -> None:
            while not stop.is_set():
                done = await self.run_once(runtime.pool)
                if done == 0:
                    await self._rest(stop)

        return saga_worker

    async def _rest(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(self.wakeup.wait())]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait(
                waiters, timeout=self.own.worker_interval_s, return_when=asyncio.FIRST_COMPLETED
            )
        for waiter in waiters:
            waiter.cancel()
        self.wakeup.clear()

    async def run_once(self, pool: asyncpg.Pool) -> int:
        """Claim the due steps, run them side by side, record their outcomes; how many."""
        try:
            async with pool.acquire() as conn, conn.transaction():
                claims = await service.claim_due(
                    conn, self.clock, self.own.lease, self.own.worker_batch_size
                )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("claiming saga steps failed", error=str(exc))
            return 0
        await asyncio.gather(*(self._advance(pool, claim) for claim in claims))
        return len(claims)

    async def _advance(self, pool: asyncpg.Pool, claim: service.Claim) -> None:
        if claim.step in saga.LIFECYCLE:
            try:
                async with pool.acquire() as conn:
                    order = await lifecycle.step_context(conn, claim.order, claim.step)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("reading a step's context failed", error=str(exc))
                return  # the lease lapses and the step is tried again
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
            async with pool.acquire() as conn, conn.transaction():
                await service.record_outcome(conn, self.clock, claim, outcome, self.policies)
        except Exception as exc:
            # Not lost: the lease lapses and the step runs again under the same idempotency
            # keys; an order that keeps failing here shows in `omnistock orders stuck`. One
            # such order must not stop the saga of every other.
            log.exception(
                "recording a saga step failed", order_id=claim.order.order_id, error=str(exc)
            )

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
