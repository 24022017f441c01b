"""Payments when things go wrong or take long: PSP timeouts resolved without charging twice, a
void that waits for an authorization in doubt, try before you buy held over a month of
authorizations that last a week, concurrent captures, and concurrent writers of one payment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from omnistock.payments import repository
from omnistock.payments.repository import ConcurrentUpdate
from omnistock.payments.simulator import Fault, SimulatedPsp, SimulatorSettings
from omnistock.platform.clock import ManualClock
from omnistock.platform.outbox import OutboxRows
from omnistock.platform.settings import Settings
from tests.integration.conftest import wait_for
from tests.integration.test_payments_api import (
    authorized,
    call,
    create,
    current,
    key,
    look_at,
    payments,
    payments_schema,
    quick_clock,
    simulator,
)

pytestmark = pytest.mark.integration
RECOVERY = timedelta(seconds=31)  # past OMNISTOCK_PAYMENTS_RETRY_AFTER_S


@pytest.fixture
async def schema(settings: Settings) -> AsyncIterator[str]:
    async with payments_schema(settings) as schema:
        yield schema


@pytest.fixture
async def pool(settings: Settings, schema: str) -> AsyncIterator[asyncpg.Pool]:
    async with look_at(settings, schema) as pool:
        yield pool


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    return quick_clock(monkeypatch)


@pytest.fixture
def psp(clock: ManualClock) -> SimulatedPsp:
    return simulator(clock)


async def quiet(pool: asyncpg.Pool, clock: ManualClock) -> bool:
    """Nothing due for the scheduler and no operation waiting for the PSP."""
    return bool(
        await pool.fetchval(
            """SELECT NOT EXISTS (SELECT FROM payments WHERE next_check_at <= $1)
                  AND NOT EXISTS (SELECT FROM payment_operations WHERE status = 'pending')""",
            clock.now(),
        )
    )


async def status_is(client: Any, payment: dict[str, Any], status: str) -> bool:
    return bool((await current(client, payment))["status"] == status)


async def test_a_lost_answer_is_looked_up_and_a_lost_request_sent_again_never_charging_twice(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool, psp: SimulatedPsp
) -> None:
    async with payments(settings, clock, schema, psp) as client:
        payment = await create(client, 8_000)
        # The PSP authorizes, but its answer never arrives.
        doubt = await call(client, payment, "authorize", {"payment_method_token": "tok_timeout"})
        assert doubt.status_code == 202, doubt.text
        assert doubt.json()["payment"]["status"] == "authorizing"
        clock.advance(RECOVERY)
        await wait_for(lambda: status_is(client, payment, "authorized"), 10, what="recovery")
        assert psp.calls["authorize"] == 1, "looked up, not sent again"
        assert psp.calls["lookup"] >= 1

        # A capture request that never reached the PSP: the client's retry sends it again.
        psp.inject(Fault.TIMEOUT_BEFORE, "capture")
        headers = key()
        lost = await call(client, payment, "captures", {"amount": 3_000}, headers)
        assert lost.status_code == 202
        retried = await call(client, payment, "captures", {"amount": 3_000}, headers)
        assert retried.status_code == 200, retried.text
        assert retried.json()["outcome"] == "succeeded"

        # A capture done whose answer is lost, then the client retries before the recovery
        # job gets to it, and the recovery job runs too: one capture at the PSP.
        psp.inject(Fault.TIMEOUT_AFTER, "capture")
        headers = key()
        assert (
            await call(client, payment, "captures", {"amount": 5_000}, headers)
        ).status_code == 202
        assert (
            await call(client, payment, "captures", {"amount": 5_000}, headers)
        ).status_code == 200
        clock.advance(RECOVERY)
        await wait_for(lambda: quiet(pool, clock), 10, what="nothing left pending")
        final = await current(client, payment)
    pid = payment["payment_id"]
    assert (final["status"], final["captured"]) == ("settled", 8_000)
    assert psp.captured(pid) == 8_000
    assert len(psp.authorizations_of(pid)) == 1


async def test_a_void_waits_for_an_authorization_in_doubt_and_releases_it(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool, psp: SimulatedPsp
) -> None:
    async with payments(settings, clock, schema, psp) as client:
        # The saga gives up on an order whose authorization is still undecided.
        slow = await create(client, 5_000, "pay_later")
        await call(client, slow, "authorize", {"payment_method_token": "tok_async"})
        void = await call(client, slow, "void")
        assert void.status_code == 202
        assert void.json()["outcome"] == "scheduled"
        psp.decide_pending()  # approved after all: the service lets go of it at once
        clock.advance(RECOVERY)
        await wait_for(lambda: status_is(client, slow, "voided"), 10, what="the waiting void")
        # An authorization request lost on its way: once voided, it is never sent again.
        lost = await create(client, 6_000)
        doubt = await call(client, lost, "authorize", {"payment_method_token": "tok_lost"})
        assert doubt.status_code == 202
        assert (await call(client, lost, "void")).json()["outcome"] == "scheduled"
        clock.advance(RECOVERY)
        await wait_for(lambda: status_is(client, lost, "voided"), 10, what="the abandoned auth")
        # A partly captured payment: the void releases the rest.
        partial = await authorized(client, 7_000)
        await call(client, partial, "captures", {"amount": 2_000})
        voided = (await call(client, partial, "void")).json()
        assert voided["outcome"] == "succeeded"
        payment = voided["payment"]
        assert (payment["status"], payment["captured"], payment["released"]) == (
            "settled",
            2_000,
            5_000,
        )
        await wait_for(lambda: quiet(pool, clock), 10, what="nothing left pending")
    assert psp.held(slow["payment_id"]) == 0
    assert psp.authorizations_of(lost["payment_id"]) == []
    assert psp.calls["authorize"] == 3  # tok_async, tok_lost once, tok_visa
    assert psp.held(partial["payment_id"]) == 0


async def test_try_before_you_buy_is_held_through_a_month_and_charged_when_the_trial_ends(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool, psp: SimulatedPsp
) -> None:
    """Authorizations last 7 days; the trial window closes on day 30. The service renews the
    authorization a day before each lapse, captures what the saga says was kept on day 20, and
    charges the rest when the window closes."""
    async with payments(settings, clock, schema, psp) as client:
        payment = await authorized(client, 20_000, "try_before_you_buy")
        window = await client.put(
            f"/v1/payments/{payment['payment_id']}/trial-window",
            json={"ends_at": (clock.now() + timedelta(days=30)).isoformat()},
            headers=key(),
        )
        assert window.status_code == 200, window.text
        for day in range(1, 32):
            clock.advance(timedelta(days=1))
            await wait_for(lambda: quiet(pool, clock), 10, what=f"day {day} handled")
            if day == 20:
                kept = await call(client, payment, "captures", {"amount": 12_000})
                assert kept.json()["outcome"] == "succeeded"
        final = await current(client, payment)
    assert (final["status"], final["captured"]) == ("settled", 20_000)
    kinds = [h["type"].split(".")[2] for h in final["history"]]
    assert kinds.count("payment-reauthorized") == 4  # days 6, 12, 18, 24
    assert "authorization-expiring" not in kinds
    assert "authorization-expired" not in kinds
    automatic = [op for op in final["operations"] if op["trigger"] == "trial-window-closed"]
    assert [(op["kind"], op["amount"], op["status"]) for op in automatic] == [
        ("capture", 8_000, "succeeded")
    ]
    pid = payment["payment_id"]
    assert psp.captured(pid) == 20_000
    assert psp.held(pid) == 0
    statuses = [a.status for a in psp.authorizations_of(pid)]
    assert statuses.count("voided") == 4, "each replaced authorization is released"


async def test_an_authorization_that_cannot_be_renewed_is_announced_then_lapses(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool, psp: SimulatedPsp
) -> None:
    async with payments(settings, clock, schema, psp) as client:
        payment = await create(client, 4_000, "try_before_you_buy")
        response = await call(
            client, payment, "authorize", {"payment_method_token": "tok_reauth_declined"}
        )
        assert response.json()["outcome"] == "succeeded"
        card = await authorized(client, 3_000)
        for _ in range(8):
            clock.advance(timedelta(days=1))
            await wait_for(lambda: quiet(pool, clock), 10, what="the day handled")
        held, plain = await current(client, payment), await current(client, card)
    assert held["status"] == plain["status"] == "expired"
    kinds = [h["type"].split(".")[2] for h in held["history"]]
    assert kinds[-3:] == ["operation-failed", "authorization-expiring", "authorization-expired"]
    assert [h["type"].split(".")[2] for h in plain["history"]][-2:] == [
        "authorization-expiring",
        "authorization-expired",
    ]


async def test_concurrent_captures_on_two_replicas_never_exceed_the_authorization(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool
) -> None:
    # Each capture spends 5 ms at the PSP, so many are in flight at once.
    psp = SimulatedPsp(clock, SimulatorSettings(latency_ms=5, async_decision_ms=None))
    async with (
        payments(settings, clock, schema, psp) as one,
        payments(settings, clock, schema, psp) as two,
    ):
        payment = await authorized(one, 10_000)
        requests = [
            call(client, payment, "captures", {"amount": 500})
            for client in (one, two)
            for _ in range(20)
        ]
        answers = await asyncio.gather(*requests)
        final = await current(one, payment)
    codes = sorted(a.status_code for a in answers)
    assert codes.count(200) == 20, codes
    assert set(codes[20:]) <= {409, 422}
    assert (final["status"], final["captured"], final["capture_pending"]) == ("settled", 10_000, 0)
    assert psp.captured(payment["payment_id"]) == 10_000


async def test_two_writers_of_one_payment_version_conflict(
    settings: Settings, clock: ManualClock, schema: str, pool: asyncpg.Pool, psp: SimulatedPsp
) -> None:
    async with payments(settings, clock, schema, psp) as client:
        payment = await authorized(client, 1_000)
    async with pool.acquire() as a, pool.acquire() as b:
        first = await repository.load_payment(a, payment["payment_id"])
        second = await repository.load_payment(b, payment["payment_id"])
        assert first is not None
        assert second is not None
        version = first.version
        first.request_capture(repository.new_id(), 100, clock.now())
        second.request_capture(repository.new_id(), 900, clock.now())
        none = OutboxRows([], [], [], [], None)
        await repository.write_payment(
            a, first, clock.now(), None, [], none, expected_version=version
        )
        # Outside a transaction: the refused write must leave its history and event out itself.
        late = (version + 1, clock.now(), "late", {"amount": 900})
        event = OutboxRows([repository.new_id()], ["payments"], ["k"], [b"{}"], None)
        with pytest.raises(ConcurrentUpdate):
            await repository.write_payment(
                b, second, clock.now(), None, [late], event, expected_version=version
            )
        assert await a.fetchval("SELECT count(*) FROM payment_history WHERE type = 'late'") == 0
        assert (
            await a.fetchval("SELECT count(*) FROM outbox WHERE event_id = $1", event.event_ids[0])
            == 0
        )
