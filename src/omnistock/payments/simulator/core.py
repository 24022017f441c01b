"""A simulated PSP that behaves like a real one, faults included, deterministic for tests.

It keeps authorizations, captures and refunds in memory and enforces what a PSP enforces (no
capture beyond the authorization or after it lapsed, no refund beyond the capture); it answers
a repeated idempotency key with the first answer and tells what became of any key it saw. Its
faults: latency, declines by card token or amount, answers lost before or after the work was
done, decisions that come later by webhook, authorizations that expire, and webhooks that are
HMAC-signed, duplicated and delivered out of order.

Card tokens with a fixed behaviour (any other token is approved):

=========================  =====================================================================
``tok_declined``           declined, ``card_declined``
``tok_insufficient_funds`` declined, ``insufficient_funds``
``tok_timeout``            done, but the first answer to each key is lost (a timeout)
``tok_lost``               the first request of each key is lost before it is done (a timeout)
``tok_async``              pending; approved later (``async_decision_ms`` or ``decide_pending``)
``tok_async_declined``     pending; declined later
``tok_reauth_declined``    the first authorization of a payment approved, any later one declined
=========================  =====================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import orjson
import structlog
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from omnistock.payments.psp import (
    DEVELOPMENT_PSP_API_KEY,
    AuthorizationRequest,
    Decision,
    PspResult,
    PspUnavailable,
    result_body,
)
from omnistock.payments.signatures import DEVELOPMENT_WEBHOOK_SECRET, SIGNATURE_HEADER, sign
from omnistock.platform.clock import Clock

log = structlog.get_logger(__name__)

DECLINING_TOKENS = {"tok_declined": "card_declined", "tok_insufficient_funds": "insufficient_funds"}
ASYNC_TOKENS = {"tok_async": True, "tok_async_declined": False}


class SimulatorSettings(BaseSettings):
    """The simulator's knobs (environment prefix ``OMNISTOCK_PSP_SIM_``)."""

    model_config = SettingsConfigDict(env_prefix="OMNISTOCK_PSP_SIM_", extra="ignore")

    latency_ms: float = Field(default=0, ge=0, description="added to every request")
    authorization_days: float = Field(default=7, gt=0, description="an authorization's life")
    decline_above: int | None = Field(default=None, description="decline larger authorizations")
    timeout_rate: float = Field(default=0, ge=0, le=1, description="answers lost after the work")
    lost_rate: float = Field(default=0, ge=0, le=1, description="requests lost before the work")
    seed: int | None = None  # for the random faults and the webhook shuffle
    async_decision_ms: float | None = Field(default=500, ge=0)  # None: only on decide_pending()
    webhook_url: str | None = None
    webhook_secret: str = DEVELOPMENT_WEBHOOK_SECRET
    webhook_duplicates: bool = False  # deliver every webhook twice
    webhook_shuffle: bool = False  # deliver each batch in random order
    api_key: str = DEVELOPMENT_PSP_API_KEY


class Fault(StrEnum):
    TIMEOUT_AFTER = "timeout-after"  # done, the answer lost
    TIMEOUT_BEFORE = "timeout-before"  # the request lost, nothing done


FAULTY_TOKENS = {"tok_timeout": Fault.TIMEOUT_AFTER, "tok_lost": Fault.TIMEOUT_BEFORE}
DECLINING_AFTER_FIRST = frozenset({"tok_reauth_declined"})


@dataclass(slots=True)
class Authorization:
    reference: str
    merchant_reference: str
    amount: int
    currency: str
    expires_at: datetime
    status: str = "authorized"  # authorized | voided | expired
    captured: int = 0


@dataclass(slots=True)
class Capture:
    reference: str
    authorization: str
    amount: int
    currency: str
    refunded: int = 0


@dataclass(frozen=True, slots=True)
class Webhook:
    event_id: str
    body: bytes


@dataclass(slots=True)
class _Answer:
    fingerprint: tuple[Any, ...]
    result: PspResult
    operation: str
    merchant_reference: str
    amount: int
    currency: str


@dataclass(slots=True)
class _Pending:
    """An authorization whose decision comes later."""

    request: AuthorizationRequest
    approve: bool


@dataclass
class SimulatedPsp:
    """The simulator, in process; ``omnistock payments psp-sim`` serves it over HTTP."""

    clock: Clock
    settings: SimulatorSettings = field(default_factory=SimulatorSettings)

    def __post_init__(self) -> None:
        self.authorizations: dict[str, Authorization] = {}
        self.captures: dict[str, Capture] = {}
        self.refunds: dict[str, int] = {}
        self.calls: dict[str, int] = {}  # requests received, by operation
        self._answers: dict[str, _Answer] = {}
        self._pending: dict[str, _Pending] = {}
        self._faults: deque[tuple[Fault, str | None]] = deque()
        self._faulted_keys: set[str] = set()
        self._webhooks: list[Webhook] = []
        self._random = random.Random(self.settings.seed)
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the PSP's API --

    async def authorize(self, request: AuthorizationRequest) -> PspResult:
        fingerprint = ("authorize", request.merchant_reference, request.amount, request.currency)
        return await self._handle(
            "authorize",
            request.key,
            fingerprint,
            lambda: self._authorize(request),
            request.payment_method_token,
        )

    async def capture(self, key: str, authorization: str, amount: int, currency: str) -> PspResult:
        return await self._handle(
            "capture",
            key,
            ("capture", authorization, amount, currency),
            lambda: self._capture(authorization, amount, currency),
        )

    async def void(self, key: str, authorization: str) -> PspResult:
        return await self._handle(
            "void", key, ("void", authorization), lambda: self._void(authorization)
        )

    async def refund(self, key: str, capture: str, amount: int, currency: str) -> PspResult:
        return await self._handle(
            "refund",
            key,
            ("refund", capture, amount, currency),
            lambda: self._refund(capture, amount, currency),
        )

    async def lookup(self, key: str) -> PspResult | None:
        await self._latency()
        self.calls["lookup"] = self.calls.get("lookup", 0) + 1
        answer = self._answers.get(key)
        return answer.result if answer else None

    # -- knobs for tests and the HTTP server --

    def inject(self, fault: Fault, operation: str | None = None, times: int = 1) -> None:
        """The next ``times`` requests (of ``operation``, or any) meet ``fault``."""
        self._faults.extend([(fault, operation)] * times)

    def decide_pending(self) -> int:
        """Decide every authorization still pending; returns how many."""
        keys = list(self._pending)
        for key in keys:
            self._decide(key)
        return len(keys)

    def expire_due(self) -> int:
        """Lapse the authorizations whose time has come, announcing each by webhook."""
        now = self.clock.now()
        lapsed = [
            a
            for a in self.authorizations.values()
            if a.status == "authorized" and a.expires_at <= now
        ]
        for authorization in lapsed:
            authorization.status = "expired"
            self._queue_webhook(
                "authorization.expired",
                reference=authorization.reference,
                merchant_reference=authorization.merchant_reference,
                amount=authorization.amount - authorization.captured,
                currency=authorization.currency,
            )
        return len(lapsed)

    def take_webhooks(self) -> list[Webhook]:
        """The webhooks not yet delivered, oldest first; they are the caller's to deliver."""
        taken, self._webhooks = self._webhooks, []
        return taken

    def signed_headers(self, webhook: Webhook) -> dict[str, str]:
        """Headers of one delivery, signed now (every delivery is signed afresh)."""
        timestamp = int(self.clock.now().timestamp())
        return {
            SIGNATURE_HEADER: sign(self.settings.webhook_secret, webhook.body, timestamp),
            "Content-Type": "application/json",
        }

    async def deliver_webhooks(
        self,
        post: Callable[[bytes, dict[str, str]], Awaitable[int]],
        stop: asyncio.Event,
        interval_s: float = 0.05,
    ) -> None:
        """Deliver webhooks until ``stop``: duplicated and shuffled as configured, each retried
        until it is answered with a 2xx."""
        while not stop.is_set():
            batch = self.take_webhooks()
            if self.settings.webhook_duplicates:
                batch = [hook for hook in batch for _ in (1, 2)]
            if self.settings.webhook_shuffle:
                self._random.shuffle(batch)
            failed: dict[str, Webhook] = {}
            for hook in batch:
                try:
                    status = await post(hook.body, self.signed_headers(hook))
                except Exception as exc:
                    log.warning("webhook delivery failed", webhook=hook.event_id, error=repr(exc))
                    status = 0
                if not 200 <= status < 300:
                    failed[hook.event_id] = hook
            self._webhooks[:0] = failed.values()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s * (20 if failed else 1))

    # -- bookkeeping, for assertions --

    def authorizations_of(self, merchant_reference: str) -> list[Authorization]:
        return [
            a for a in self.authorizations.values() if a.merchant_reference == merchant_reference
        ]

    def captured(self, merchant_reference: str) -> int:
        refs = {a.reference for a in self.authorizations_of(merchant_reference)}
        return sum(c.amount for c in self.captures.values() if c.authorization in refs)

    def refunded(self, merchant_reference: str) -> int:
        refs = {a.reference for a in self.authorizations_of(merchant_reference)}
        return sum(c.refunded for c in self.captures.values() if c.authorization in refs)

    def held(self, merchant_reference: str) -> int:
        """What live authorizations of the payment still hold on the customer's card."""
        return sum(
            a.amount - a.captured
            for a in self.authorizations_of(merchant_reference)
            if a.status == "authorized"
        )

    # -- the work --

    async def _handle(
        self,
        operation: str,
        key: str,
        fingerprint: tuple[Any, ...],
        work: Callable[[], tuple[PspResult, str, int, str]],
        token: str | None = None,
    ) -> PspResult:
        await self._latency()
        self.calls[operation] = self.calls.get(operation, 0) + 1
        fault = self._fault_for(operation, key, token)
        if fault is Fault.TIMEOUT_BEFORE:
            raise PspUnavailable(f"simulated timeout before {operation} {key}")
        answer = self._answers.get(key)
        if answer is None:
            result, merchant_reference, amount, currency = work()
            answer = _Answer(fingerprint, result, operation, merchant_reference, amount, currency)
            self._answers[key] = answer
            if result.decision is not Decision.PENDING:
                self._announce(key, answer)
        elif answer.fingerprint != fingerprint:
            return PspResult(Decision.DECLINED, reason="idempotency_key_reused")
        if fault is Fault.TIMEOUT_AFTER:
            raise PspUnavailable(f"simulated timeout after {operation} {key}")
        return answer.result

    def _authorize(self, request: AuthorizationRequest) -> tuple[PspResult, str, int, str]:
        token, payment = request.payment_method_token, request.merchant_reference
        meta = (payment, request.amount, request.currency)
        if token in DECLINING_TOKENS:
            return PspResult(Decision.DECLINED, reason=DECLINING_TOKENS[token]), *meta
        limit = self.settings.decline_above
        if limit is not None and request.amount > limit:
            return PspResult(Decision.DECLINED, reason="amount_limit_exceeded"), *meta
        if token in DECLINING_AFTER_FIRST and self.authorizations_of(payment):
            return PspResult(Decision.DECLINED, reason="do_not_honor"), *meta
        if token in ASYNC_TOKENS:
            self._pending[request.key] = _Pending(request, ASYNC_TOKENS[token])
            self._decide_later(request.key)
            return PspResult(Decision.PENDING, reference=None), *meta
        return self._approve_authorization(request), *meta

    def _approve_authorization(self, request: AuthorizationRequest) -> PspResult:
        reference = f"auth_{uuid.uuid4().hex[:16]}"
        expires_at = self.clock.now() + timedelta(days=self.settings.authorization_days)
        self.authorizations[reference] = Authorization(
            reference, request.merchant_reference, request.amount, request.currency, expires_at
        )
        return PspResult(Decision.APPROVED, reference, expires_at=expires_at)

    def _capture(
        self, reference: str, amount: int, currency: str
    ) -> tuple[PspResult, str, int, str]:
        known = self.authorizations.get(reference)
        meta = (known.merchant_reference if known else "", amount, currency)
        authorization = self._live(reference)
        if not isinstance(authorization, Authorization):
            return PspResult(Decision.DECLINED, reason=authorization), *meta
        if currency != authorization.currency:
            return PspResult(Decision.DECLINED, reason="currency_mismatch"), *meta
        if authorization.captured + amount > authorization.amount:
            return PspResult(Decision.DECLINED, reason="amount_exceeds_authorization"), *meta
        authorization.captured += amount
        capture = Capture(f"cap_{uuid.uuid4().hex[:16]}", reference, amount, currency)
        self.captures[capture.reference] = capture
        return PspResult(Decision.APPROVED, capture.reference), *meta

    def _void(self, reference: str) -> tuple[PspResult, str, int, str]:
        authorization = self.authorizations.get(reference)
        if authorization is None:
            return PspResult(Decision.DECLINED, reason="unknown_authorization"), "", 0, ""
        meta = (
            authorization.merchant_reference,
            authorization.amount - authorization.captured,
            authorization.currency,
        )
        if authorization.status == "voided":
            return PspResult(Decision.DECLINED, reason="already_voided"), *meta
        authorization.status = "voided"  # an expired one has nothing left to release: fine too
        return PspResult(Decision.APPROVED, reference), *meta

    def _refund(
        self, reference: str, amount: int, currency: str
    ) -> tuple[PspResult, str, int, str]:
        capture = self.captures.get(reference)
        if capture is None:
            return PspResult(Decision.DECLINED, reason="unknown_capture"), "", amount, currency
        payment = self.authorizations[capture.authorization].merchant_reference
        if currency != capture.currency or capture.refunded + amount > capture.amount:
            declined = PspResult(Decision.DECLINED, reason="amount_exceeds_capture")
            return declined, payment, amount, currency
        capture.refunded += amount
        refund = f"ref_{uuid.uuid4().hex[:16]}"
        self.refunds[refund] = amount
        return PspResult(Decision.APPROVED, refund), payment, amount, currency

    def _live(self, reference: str) -> Authorization | str:
        """The authorization if it can still be captured, else why not."""
        authorization = self.authorizations.get(reference)
        if authorization is None:
            return "unknown_authorization"
        if authorization.status == "authorized" and authorization.expires_at <= self.clock.now():
            authorization.status = "expired"
        if authorization.status != "authorized":
            return f"authorization_{authorization.status}"
        return authorization

    def _decide(self, key: str) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        request = pending.request
        if pending.approve:
            result = self._approve_authorization(request)
        else:
            result = PspResult(Decision.DECLINED, reason="credit_check_failed")
        answer = self._answers[key]
        answer.result = result
        self._announce(key, answer)

    def _decide_later(self, key: str) -> None:
        delay_ms = self.settings.async_decision_ms
        if delay_ms is None:
            return

        async def later() -> None:
            await asyncio.sleep(delay_ms / 1000)
            self._decide(key)

        task = asyncio.get_running_loop().create_task(later())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _announce(self, key: str, answer: _Answer) -> None:
        self._queue_webhook(
            "request.decided",
            idempotency_key=key,
            operation=answer.operation,
            merchant_reference=answer.merchant_reference,
            amount=answer.amount,
            currency=answer.currency,
            **result_body(answer.result),
        )

    def _queue_webhook(self, type_: str, **data: Any) -> None:
        event_id = f"evt_{uuid.uuid4().hex}"
        body = {"id": event_id, "type": type_, "created_at": self.clock.now().isoformat(), **data}
        self._webhooks.append(Webhook(event_id, orjson.dumps(body)))

    def _fault_for(self, operation: str, key: str, token: str | None) -> Fault | None:
        if self._faults and self._faults[0][1] in (None, operation):
            return self._faults.popleft()[0]
        if token in FAULTY_TOKENS and key not in self._faulted_keys:
            self._faulted_keys.add(key)
            return FAULTY_TOKENS[token]
        roll = self._random.random()
        if roll < self.settings.lost_rate:
            return Fault.TIMEOUT_BEFORE
        if roll < self.settings.lost_rate + self.settings.timeout_rate:
            return Fault.TIMEOUT_AFTER
        return None

    async def _latency(self) -> None:
        if self.settings.latency_ms:
            await asyncio.sleep(self.settings.latency_ms / 1000)
