"""The PSP simulator's behaviour, faults included, and webhook signatures."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from omnistock.payments.psp import AuthorizationRequest, Decision, HttpPsp, PspUnavailable
from omnistock.payments.signatures import BadSignature, sign, verify
from omnistock.payments.simulator import Fault, SimulatedPsp, SimulatorSettings
from omnistock.platform.clock import ManualClock

T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)
SECRET = "s3cret"


def simulator(**knobs: Any) -> tuple[SimulatedPsp, ManualClock]:
    clock = ManualClock(T0)
    return SimulatedPsp(clock, SimulatorSettings(async_decision_ms=None, **knobs)), clock


def authorization(key: str, card: str = "tok_visa", amount: int = 5_000) -> AuthorizationRequest:
    return AuthorizationRequest(key, "payment-1", amount, "PLN", "card", card)


def test_a_signature_proves_body_secret_and_time() -> None:
    body = b'{"id": "evt_1"}'
    now = int(T0.timestamp())
    verify(SECRET, body, sign(SECRET, body, now), T0, 300)
    rotating = f"{sign('old', body, now)},v1={sign(SECRET, body, now).split('v1=')[1]}"
    verify(SECRET, body, rotating, T0, 300)
    for header in (
        None,
        "v1=abc",
        sign("other", body, now),
        sign(SECRET, body + b" ", now),
        sign(SECRET, body, now - 301),
    ):
        with pytest.raises(BadSignature):
            verify(SECRET, body, header, T0, 300)


async def test_captures_stay_within_the_authorization_and_refunds_within_the_capture() -> None:
    psp, _ = simulator()
    auth = await psp.authorize(authorization("a"))
    assert auth.decision is Decision.APPROVED
    assert auth.reference
    assert auth.expires_at == T0 + timedelta(days=7)
    first = await psp.capture("c1", auth.reference, 3_000, "PLN")
    too_much = await psp.capture("c2", auth.reference, 2_001, "PLN")
    assert (first.decision, too_much.decision) == (Decision.APPROVED, Decision.DECLINED)
    assert too_much.reason == "amount_exceeds_authorization"
    assert first.reference
    refund = await psp.refund("r1", first.reference, 3_001, "PLN")
    assert refund.reason == "amount_exceeds_capture"
    assert (await psp.refund("r2", first.reference, 3_000, "PLN")).decision is Decision.APPROVED
    assert (psp.captured("payment-1"), psp.refunded("payment-1"), psp.held("payment-1")) == (
        3_000,
        3_000,
        2_000,
    )


async def test_a_repeated_key_is_answered_alike_and_a_reused_one_refused() -> None:
    psp, _ = simulator()
    first = await psp.authorize(authorization("a"))
    assert await psp.authorize(authorization("a")) == first
    assert len(psp.authorizations_of("payment-1")) == 1
    reused = await psp.authorize(authorization("a", amount=1))
    assert reused.reason == "idempotency_key_reused"
    assert await psp.lookup("a") == first
    assert await psp.lookup("never-sent") is None


@pytest.mark.parametrize(
    ("card", "reason"),
    [("tok_declined", "card_declined"), ("tok_insufficient_funds", "insufficient_funds")],
)
async def test_declines_by_card_token(card: str, reason: str) -> None:
    psp, _ = simulator()
    result = await psp.authorize(authorization("a", card))
    assert (result.decision, result.reason) == (Decision.DECLINED, reason)


async def test_declines_by_amount() -> None:
    psp, _ = simulator(decline_above=1_000)
    assert (await psp.authorize(authorization("a", amount=1_001))).reason == "amount_limit_exceeded"
    assert (await psp.authorize(authorization("b", amount=1_000))).decision is Decision.APPROVED


async def test_lost_answers_and_lost_requests() -> None:
    psp, _ = simulator()
    with pytest.raises(PspUnavailable):
        await psp.authorize(authorization("done", "tok_timeout"))
    assert (await psp.lookup("done")) is not None, "it was done; only the answer was lost"
    with pytest.raises(PspUnavailable):
        await psp.authorize(authorization("lost", "tok_lost"))
    assert await psp.lookup("lost") is None, "never received"
    assert (await psp.authorize(authorization("lost", "tok_lost"))).decision is Decision.APPROVED
    psp.inject(Fault.TIMEOUT_AFTER, "capture")
    auth = await psp.lookup("done")
    assert auth is not None
    assert auth.reference
    with pytest.raises(PspUnavailable):
        await psp.capture("c", auth.reference, 100, "PLN")
    assert (await psp.capture("c", auth.reference, 100, "PLN")).decision is Decision.APPROVED
    assert psp.captured("payment-1") == 100


async def test_authorizations_lapse_and_the_lapse_is_announced() -> None:
    psp, clock = simulator(authorization_days=3)
    auth = await psp.authorize(authorization("a"))
    assert auth.reference
    psp.take_webhooks()
    clock.advance(timedelta(days=3))
    assert psp.expire_due() == 1
    (hook,) = psp.take_webhooks()
    assert json.loads(hook.body)["type"] == "authorization.expired"
    late = await psp.capture("c", auth.reference, 1, "PLN")
    assert late.reason == "authorization_expired"


async def test_decisions_that_come_later_arrive_as_signed_webhooks() -> None:
    psp, clock = simulator(webhook_secret=SECRET)
    pending = await psp.authorize(authorization("a", "tok_async_declined"))
    assert pending.decision is Decision.PENDING
    assert psp.take_webhooks() == []
    assert psp.decide_pending() == 1
    (hook,) = psp.take_webhooks()
    body = json.loads(hook.body)
    assert (body["type"], body["idempotency_key"], body["decision"]) == (
        "request.decided",
        "a",
        "declined",
    )
    verify(SECRET, hook.body, psp.signed_headers(hook)["Omnistock-Psp-Signature"], T0, 1)
    lookup = await psp.lookup("a")
    assert lookup is not None
    assert lookup.decision is Decision.DECLINED
    assert clock.now() == T0


async def test_a_psp_out_of_reach_is_unavailable_not_an_error_of_ours() -> None:
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    psp = HttpPsp(f"http://127.0.0.1:{port}", "key", timeout_s=2)
    try:
        with pytest.raises(PspUnavailable, match="/v1/authorizations"):
            await psp.authorize(authorization("a"))
        with pytest.raises(PspUnavailable):
            await psp.lookup("a")
    finally:
        await psp.close()
