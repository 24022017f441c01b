"""Sends recorded operations to the PSP, outside any transaction, and records what it said.

Record intent → call the PSP → record the outcome: three steps, so that no lock is held while the
PSP thinks. A request sends its own operations at once. Whatever is left pending (no answer, a
decision still to come, a crash between the steps, work the scheduler started) is taken over by
the recovery job once it is due: it first asks the PSP what became of the operation's
idempotency key, and sends it again under the same key only if the PSP never got it. Either way
the PSP does it at most once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import asyncpg
import structlog

from omnistock.payments import repository, service
from omnistock.payments.domain import OperationKind
from omnistock.payments.psp import (
    AuthorizationRequest,
    Decision,
    PaymentServiceProvider,
    PspResult,
    PspUnavailable,
)
from omnistock.payments.repository import Ticket
from omnistock.payments.service import Timing
from omnistock.platform.clock import Clock
from omnistock.platform.runtime import BackgroundJob, ServiceRuntime

log = structlog.get_logger(__name__)


class Driver:
    def __init__(self, psp: PaymentServiceProvider, clock: Clock, timing: Timing) -> None:
        self.psp = psp
        self.clock = clock
        self.timing = timing

    async def drive(self, pool: asyncpg.Pool, operation_ids: Sequence[str]) -> None:
        """Send the still pending ones of ``operation_ids`` and record the answers."""
        tickets = await repository.pending_tickets(pool, operation_ids)
        await asyncio.gather(*(self._settle(pool, ticket) for ticket in tickets))

    async def recover_due(self, pool: asyncpg.Pool, limit: int = 50) -> int:
        """One round of the recovery job; returns how many operations it took over."""
        now = self.clock.now()
        async with pool.acquire() as conn, conn.transaction():
            tickets = await repository.claim_due(
                conn, now, limit, self.timing.retry_after, self.timing.retry_at_most
            )
        await asyncio.gather(*(self._settle(pool, t, recovering=True) for t in tickets))
        return len(tickets)

    def recovery_job(self, interval_s: float) -> BackgroundJob:
        async def recovery(runtime: ServiceRuntime, stop: asyncio.Event) -> None:
            while not stop.is_set():
                try:
                    done = await self.recover_due(runtime.pool)
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    log.warning("recovery round failed, trying again", error=str(exc))
                    done = 0
                if done == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), interval_s)

        return recovery

    async def _settle(self, pool: asyncpg.Pool, ticket: Ticket, recovering: bool = False) -> None:
        key = ticket.operation.operation_id
        try:
            result = await self.psp.lookup(key) if ticket.sent_before else None
            if result is None and ticket.sent_before and self._abandonable(ticket):
                async with pool.acquire() as conn, conn.transaction():
                    await service.abandon_authorization(conn, self.clock, self.timing, key)
                return
            if result is None:
                result = await self._send(ticket)
        except PspUnavailable as exc:
            log.info("PSP outcome unknown, resolved later", operation_id=key, error=str(exc))
            if not recovering:  # the recovery job's claim already set its next attempt
                await self._retry_later(pool, ticket)
            return
        if result.decision is Decision.PENDING:
            if not recovering:
                await self._retry_later(pool, ticket)
            return
        async with pool.acquire() as conn, conn.transaction():
            await service.record_outcome(conn, self.clock, self.timing, key, result)

    async def _send(self, ticket: Ticket) -> PspResult:
        op = ticket.operation
        key, target = op.operation_id, op.target_reference or ""
        if op.kind in (OperationKind.AUTHORIZE, OperationKind.REAUTHORIZE):
            return await self.psp.authorize(
                AuthorizationRequest(
                    key,
                    ticket.payment_id,
                    op.amount,
                    ticket.currency,
                    ticket.method,
                    ticket.payment_method_token or "",
                )
            )
        if op.kind is OperationKind.CAPTURE:
            return await self.psp.capture(key, target, op.amount, ticket.currency)
        if op.kind in (OperationKind.VOID, OperationKind.RELEASE):
            return await self.psp.void(key, target)
        assert op.kind is OperationKind.REFUND
        return await self.psp.refund(key, target, op.amount, ticket.currency)

    @staticmethod
    def _abandonable(ticket: Ticket) -> bool:
        """An authorization the PSP never got, for a payment that is to be voided anyway: it
        is not worth sending again."""
        return ticket.operation.kind is OperationKind.AUTHORIZE and ticket.void_requested

    async def _retry_later(self, pool: asyncpg.Pool, ticket: Ticket) -> None:
        at = self.clock.now() + self.timing.retry_after
        await repository.retry_later(pool, ticket.operation.operation_id, at)
