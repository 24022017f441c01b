"""The payment state machine and money rules: worked examples and properties."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnistock.payments.domain import (
    TERMINAL,
    TRANSITIONS,
    ChangeKind,
    InvalidTransition,
    Method,
    Move,
    Operation,
    OperationKind,
    Outcome,
    Payment,
    PaymentRefused,
    Status,
    Step,
    Trigger,
    allocate_refund,
)

T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)
LEAD = timedelta(days=1)
ids = (f"op-{n}" for n in itertools.count())
APPROVED = Outcome(True, "auth-1", expires_at=T0 + timedelta(days=7))


def new(amount: int = 10_000, method: Method = Method.CARD) -> Payment:
    return Payment.create(
        payment_id="p-1",
        order_id="o-1",
        customer_id="c-1",
        method=method,
        currency="PLN",
        amount=amount,
        now=T0,
    )


def authorized(amount: int = 10_000, method: Method = Method.CARD) -> Payment:
    payment = new(amount, method)
    payment.resolve(payment.request_authorization(next(ids), "tok", T0), APPROVED, T0)
    return payment


def approve(reference: str = "ref") -> Outcome:
    return Outcome(True, reference)


def test_the_table_covers_every_status_and_terminal_ones_allow_nothing() -> None:
    assert set(TRANSITIONS) == set(Status)
    assert {Status.REFUNDED, Status.DECLINED, Status.VOIDED, Status.EXPIRED} == TERMINAL
    reachable = {
        to for moves in TRANSITIONS.values() for targets in moves.values() for to in targets
    }
    assert reachable | {Status.CREATED} == set(Status)


def test_partial_captures_up_to_the_authorization_then_settled() -> None:
    payment = authorized()
    first = payment.request_capture(next(ids), 4_000, T0)
    second = payment.request_capture(next(ids), 6_000, T0)
    with pytest.raises(PaymentRefused, match="at most 0"):
        payment.request_capture(next(ids), 1, T0)  # both are counted while under way
    payment.resolve(first, approve(), T0)
    assert payment.status is Status.AUTHORIZED
    payment.resolve(second, approve(), T0)
    assert (payment.status, payment.captured, payment.capturable) == (Status.SETTLED, 10_000, 0)


def test_a_failed_capture_gives_its_amount_back() -> None:
    payment = authorized()
    capture = payment.request_capture(next(ids), 10_000, T0)
    payment.resolve(capture, Outcome(False, reason="authorization_expired"), T0)
    assert (payment.status, payment.capturable) == (Status.AUTHORIZED, 10_000)
    assert payment.changes[-1].kind is ChangeKind.OPERATION_FAILED


def test_refunds_never_exceed_captures_and_split_over_them() -> None:
    payment = authorized()
    for amount, reference in ((3_000, "cap-1"), (7_000, "cap-2")):
        payment.resolve(payment.request_capture(next(ids), amount, T0), approve(reference), T0)
    with pytest.raises(PaymentRefused) as refused:
        payment.request_refund(["r"], 10_001, [("cap-1", 3_000), ("cap-2", 7_000)], T0)
    assert refused.value.field == "amount"
    parts = payment.request_refund(["r1", "r2"], 5_000, [("cap-1", 3_000), ("cap-2", 7_000)], T0)
    assert [(op.target_reference, op.amount) for op in parts] == [
        ("cap-1", 3_000),
        ("cap-2", 2_000),
    ]
    for part in parts:
        payment.resolve(part, approve(), T0)
    last = payment.request_refund(["r3"], 5_000, [("cap-2", 5_000)], T0)
    payment.resolve(last[0], approve(), T0)
    assert (payment.status, payment.refunded) == (Status.REFUNDED, 10_000)


def test_a_void_releases_the_remainder_and_waits_for_captures_under_way() -> None:
    payment = authorized()
    capture = payment.request_capture(next(ids), 2_000, T0)
    assert payment.request_void("void-1", T0) is None  # waits for the capture
    with pytest.raises(InvalidTransition, match="a void was requested"):
        payment.request_capture(next(ids), 1, T0)
    payment.resolve(capture, approve(), T0)
    assert payment.due_step(T0, LEAD) is Step.VOID
    void = payment.perform_due_step(next(ids), T0, LEAD)
    assert void is not None
    assert (void.operation_id, void.amount, void.trigger) == (
        "void-1",
        8_000,
        Trigger.VOID_REQUESTED,
    )
    payment.resolve(void, approve(), T0)
    assert (payment.status, payment.released, payment.captured) == (Status.SETTLED, 8_000, 2_000)


def test_a_void_before_any_authorization_needs_no_psp() -> None:
    payment = new()
    assert payment.request_void(next(ids), T0) is None
    assert payment.status is Status.VOIDED
    with pytest.raises(InvalidTransition):
        payment.request_authorization(next(ids), "tok", T0)


def test_illegal_moves_raise_every_time() -> None:
    payment = new()
    for _ in range(2):
        with pytest.raises(InvalidTransition):
            payment.request_capture(next(ids), 1, T0)
        with pytest.raises(InvalidTransition):
            payment.request_refund(["r"], 1, [], T0)
    assert payment.version == 1
    declined = new()
    declined.resolve(
        declined.request_authorization(next(ids), "tok", T0), Outcome(False, reason="no"), T0
    )
    assert declined.status is Status.DECLINED
    with pytest.raises(InvalidTransition):
        declined.request_void(next(ids), T0)


def test_only_try_before_you_buy_has_a_trial_window() -> None:
    with pytest.raises(PaymentRefused) as refused:
        new().set_trial_window(T0 + timedelta(days=14), T0)
    assert refused.value.field == "ends_at"


def test_try_before_you_buy_is_renewed_before_it_lapses_and_charged_when_the_trial_ends() -> None:
    payment = authorized(20_000, Method.TRY_BEFORE_YOU_BUY)
    payment.set_trial_window(T0 + timedelta(days=10), T0)
    assert payment.next_check(LEAD) == T0 + timedelta(days=6)
    renewal = payment.perform_due_step(next(ids), T0 + timedelta(days=6), LEAD)
    assert renewal is not None
    assert (renewal.kind, renewal.amount, renewal.target_reference) == (
        OperationKind.REAUTHORIZE,
        20_000,
        "auth-1",
    )
    renewed = Outcome(True, "auth-2", expires_at=T0 + timedelta(days=13))
    assert payment.resolve(renewal, renewed, T0 + timedelta(days=6)) == "auth-1"  # to release
    # The trial closes before the new authorization lapses: no more renewals, a charge.
    assert payment.next_check(LEAD) == T0 + timedelta(days=10)
    charge = payment.perform_due_step(next(ids), T0 + timedelta(days=10), LEAD)
    assert charge is not None
    assert (charge.kind, charge.amount, charge.trigger) == (
        OperationKind.CAPTURE,
        20_000,
        Trigger.TRIAL_WINDOW_CLOSED,
    )


def test_a_card_authorization_is_announced_a_day_before_it_lapses() -> None:
    payment = authorized()
    assert payment.due_step(T0 + timedelta(days=5), LEAD) is Step.NONE
    payment.perform_due_step(next(ids), T0 + timedelta(days=6), LEAD)
    assert payment.changes[-1].kind is ChangeKind.EXPIRING
    assert payment.next_check(LEAD) == T0 + timedelta(days=7)
    payment.perform_due_step(next(ids), T0 + timedelta(days=7), LEAD)
    assert (payment.status, payment.released) == (Status.EXPIRED, 10_000)


def test_refund_allocation_examples() -> None:
    assert allocate_refund([("a", 0), ("b", 5)], 5) == [("b", 5)]
    with pytest.raises(PaymentRefused):
        allocate_refund([("a", 2)], 3)


@pytest.mark.parametrize("amount", [0, -1, 10**15 + 1, True, 1.5])
def test_amounts_are_whole_positive_minor_units(amount: Any) -> None:
    with pytest.raises(PaymentRefused) as refused:
        new(amount)
    assert refused.value.field == "amount"


# -- properties --

mostly_approved = st.integers(min_value=0, max_value=4).map(lambda n: n > 0)
ARGUMENTS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "authorize": st.just(()),
    "capture": st.tuples(st.integers(min_value=1, max_value=6_000)),
    "refund": st.tuples(st.integers(min_value=1, max_value=5_000)),
    "void": st.just(()),
    "reauthorize": st.just(()),
    "trial": st.tuples(st.integers(min_value=0, max_value=40)),
    "resolve": st.tuples(st.integers(min_value=0, max_value=5), mostly_approved),
    "time": st.tuples(st.integers(min_value=1, max_value=120)),
}
# Weighted by repetition, so that scripts reach captures, refunds and the time-driven steps
# before a void or an expiry ends them.
NAMES = ["capture"] * 4 + ["resolve"] * 6 + ["refund"] * 3 + ["time"] * 2 + list(ARGUMENTS)
commands = st.sampled_from(NAMES).flatmap(
    lambda name: ARGUMENTS[name].map(lambda args: (name, *args))
)
authorized_first = st.lists(commands, max_size=40).map(
    lambda script: [("authorize",), ("resolve", 0, True), *script]
)
scripts = st.one_of(authorized_first, authorized_first, st.lists(commands, max_size=40))


class Model:
    """A payment driven by random commands, with the PSP's side kept alongside."""

    def __init__(self, method: Method) -> None:
        self.payment = new(10_000, method)
        self.now = T0
        self.pending: list[Operation] = []
        self.charged = self.given_back = 0
        self.captures: dict[str, int] = {}
        self.serial = itertools.count()

    def run(self, command: tuple[Any, ...]) -> None:
        before = self._snapshot()
        try:
            started = self._apply(command)
        except (InvalidTransition, PaymentRefused):
            assert self._snapshot() == before, f"a refused {command[0]} changed the payment"
            return
        self.pending.extend(started)

    def _apply(self, command: tuple[Any, ...]) -> list[Operation]:
        payment, name = self.payment, command[0]
        op_id = f"op-{next(self.serial)}"
        if name == "authorize":
            return [payment.request_authorization(op_id, "tok", self.now)]
        if name == "capture":
            return [payment.request_capture(op_id, command[1], self.now)]
        if name == "refund":
            # As the service counts it: what was captured, less refunds done or under way.
            in_flight: dict[str, int] = {}
            for op in self.pending:
                if op.kind is OperationKind.REFUND and op.target_reference is not None:
                    in_flight[op.target_reference] = (
                        in_flight.get(op.target_reference, 0) + op.amount
                    )
            refundable = [
                (ref, left - in_flight.get(ref, 0))
                for ref, left in self.captures.items()
                if left - in_flight.get(ref, 0)
            ]
            op_ids = [f"{op_id}-{n}" for n in range(len(refundable))]
            return payment.request_refund(op_ids, command[1], refundable, self.now)
        if name == "void":
            found = payment.request_void(op_id, self.now)
            return [found] if found else []
        if name == "reauthorize":
            return [payment.request_reauthorization(op_id, self.now)]
        if name == "trial":
            payment.set_trial_window(self.now + timedelta(days=command[1]), self.now)
            return []
        if name == "time":
            self.now += timedelta(hours=command[1])
            step = payment.perform_due_step(op_id, self.now, LEAD)
            return [step] if step else []
        return self._resolve(command[1], command[2])

    def _resolve(self, index: int, approved: bool) -> list[Operation]:
        if not self.pending:
            return []
        operation = self.pending.pop(index % len(self.pending))
        reference = f"psp-{next(self.serial)}"
        outcome = Outcome(approved, reference, expires_at=self.now + timedelta(days=7))
        released = self.payment.resolve(operation, outcome, self.now)
        assert released is None or operation.kind is OperationKind.REAUTHORIZE
        if approved and operation.kind is OperationKind.CAPTURE:
            self.charged += operation.amount
            self.captures[reference] = operation.amount
        if approved and operation.kind is OperationKind.REFUND:
            self.given_back += operation.amount
            assert operation.target_reference is not None
            self.captures[operation.target_reference] -= operation.amount
        return []

    def _snapshot(self) -> tuple[Any, ...]:
        p = self.payment
        return (
            p.status,
            p.version,
            p.authorized,
            p.captured,
            p.capture_pending,
            p.released,
            p.refunded,
            p.refund_pending,
            p.void_requested,
        )


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(list(Method)),
    script=scripts,
)
def test_no_sequence_of_moves_breaks_the_money_rules(
    method: Method, script: list[tuple[Any, ...]]
) -> None:
    model = Model(method)
    for command in script:
        model.run(command)
        payment = model.payment
        assert payment.invariants_hold()
        assert payment.captured <= payment.authorized <= payment.amount
        assert payment.refunded <= payment.captured
        assert payment.captured == model.charged, "captured is what the PSP charged"
        assert payment.refunded == model.given_back
        assert min(model.captures.values(), default=0) >= 0, "no capture refunded beyond itself"
        versions = [change.version for change in payment.changes]
        assert versions == list(range(1, payment.version + 1)), "one version per change"
        if payment.status in TERMINAL:
            assert payment.capture_pending == payment.refund_pending == 0
        due, at = payment.due_step(model.now, LEAD), payment.next_check(LEAD)
        assert (due is not Step.NONE) == (at is not None and at <= model.now)


@given(
    captures=st.lists(st.integers(min_value=0, max_value=1_000), max_size=6),
    amount=st.integers(min_value=1, max_value=7_000),
)
def test_a_refund_is_split_exactly_or_refused(captures: list[int], amount: int) -> None:
    refundable = [(f"cap-{n}", left) for n, left in enumerate(captures)]
    try:
        parts = allocate_refund(refundable, amount)
    except PaymentRefused:
        assert amount > sum(captures)
        return
    assert sum(part for _, part in parts) == amount
    available = dict(refundable)
    assert all(0 < part <= available[ref] for ref, part in parts)


def test_moves_have_a_readable_name() -> None:
    error = InvalidTransition(Status.SETTLED, Move.REQUEST_CAPTURE)
    assert str(error) == "a payment that is settled cannot request capture"
    assert replace(Operation("x", OperationKind.VOID, 0), amount=1).amount == 1
