"""The payment aggregate: every move checked against ``TRANSITIONS``, every change recorded
with its version."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from omnistock.payments.domain.rules import (
    EPOCH,
    STEP_PRIORITY,
    TRANSITIONS,
    Change,
    ChangeKind,
    InvalidTransition,
    Method,
    Move,
    Operation,
    OperationKind,
    Outcome,
    PaymentRefused,
    Status,
    Step,
    Trigger,
    allocate_refund,
    check_amount,
    check_currency,
)


@dataclass(slots=True, eq=False)
class Payment:
    payment_id: str
    order_id: str
    customer_id: str
    method: Method
    currency: str
    amount: int
    status: Status = Status.CREATED
    version: int = 0
    authorized: int = 0
    captured: int = 0
    capture_pending: int = 0
    released: int = 0
    refunded: int = 0
    refund_pending: int = 0
    payment_method_token: str | None = None
    authorization_reference: str | None = None
    authorization_expires_at: datetime | None = None
    trial_ends_at: datetime | None = None
    void_requested: str | None = None  # the id of a void waiting for the payment to be free
    # The authorization each automatic step was last tried for: tried once per authorization.
    expiry_warned_for: str | None = None
    reauthorization_tried_for: str | None = None
    trial_capture_tried_for: str | None = None
    changes: list[Change] = field(default_factory=list)  # recorded since loaded

    @classmethod
    def create(
        cls,
        *,
        payment_id: str,
        order_id: str,
        customer_id: str,
        method: Method,
        currency: str,
        amount: int,
        now: datetime,
    ) -> Payment:
        check_amount("amount", amount)
        check_currency(currency)
        payment = cls(payment_id, order_id, customer_id, method, currency, amount)
        payment._record(ChangeKind.CREATED, now, amount=amount)
        return payment

    @property
    def capturable(self) -> int:
        """What the authorization still holds that no capture has taken or asked for."""
        return self.authorized - self.captured - self.capture_pending - self.released

    @property
    def refundable(self) -> int:
        return self.captured - self.refunded - self.refund_pending

    def invariants_hold(self) -> bool:
        amounts = (self.authorized, self.captured, self.capture_pending, self.released)
        return (
            min(*amounts, self.refunded, self.refund_pending) >= 0
            and self.authorized <= self.amount
            and self.capturable >= 0
            and self.refundable >= 0
        )

    # -- requests: each records its operation and holds its amount against the payment --

    def request_authorization(self, operation_id: str, token: str, now: datetime) -> Operation:
        self._move(Move.REQUEST_AUTHORIZATION, Status.AUTHORIZING)
        self.payment_method_token = token
        return self._requested(Operation(operation_id, OperationKind.AUTHORIZE, self.amount), now)

    def request_capture(
        self, operation_id: str, amount: int, now: datetime, trigger: Trigger = Trigger.REQUEST
    ) -> Operation:
        self._allowed(Move.REQUEST_CAPTURE)
        if self.void_requested is not None:
            raise InvalidTransition(self.status, Move.REQUEST_CAPTURE, "a void was requested")
        check_amount("amount", amount)
        if amount > self.capturable:
            raise PaymentRefused("amount", f"at most {self.capturable} can still be captured")
        self.capture_pending += amount
        operation = Operation(
            operation_id, OperationKind.CAPTURE, amount, self.authorization_reference, trigger
        )
        return self._requested(operation, now)

    def request_void(self, operation_id: str, now: datetime) -> Operation | None:
        """Release the uncaptured remainder. Returns the operation to send now, or None when
        there is nothing to send yet (the void waits for the payment to be free) or at all."""
        self._allowed(Move.REQUEST_VOID)
        if self.void_requested is not None:
            raise InvalidTransition(self.status, Move.REQUEST_VOID, "a void is already requested")
        operation = Operation(operation_id, OperationKind.VOID, self.amount - self.captured)
        if self.status is Status.CREATED:
            self._move(Move.REQUEST_VOID, Status.VOIDED)
            self._record(ChangeKind.VOIDED, now, operation=replace(operation, amount=0))
            return None
        if self.status is not Status.AUTHORIZED or self.capture_pending:
            self._move(Move.REQUEST_VOID, self.status)
            self.void_requested = operation_id
            self._requested(operation, now)
            return None
        return self._start_void(operation_id, Trigger.REQUEST, now)

    def request_refund(
        self,
        operation_ids: Sequence[str],
        amount: int,
        captures: Sequence[tuple[str, int]],
        now: datetime,
    ) -> list[Operation]:
        """Refund ``amount``, split over ``captures`` (reference, still refundable) as needed;
        one operation per part, ids taken from ``operation_ids``."""
        self._allowed(Move.REQUEST_REFUND)
        check_amount("amount", amount)
        if amount > self.refundable:
            raise PaymentRefused("amount", f"at most {self.refundable} can be refunded")
        parts = allocate_refund(captures, amount)
        if len(operation_ids) < len(parts):
            raise ValueError("an operation id for every part of the refund")
        operations = []
        for operation_id, (reference, part) in zip(operation_ids[: len(parts)], parts, strict=True):
            self.refund_pending += part
            operation = Operation(operation_id, OperationKind.REFUND, part, reference)
            operations.append(self._requested(operation, now))
        return operations

    def request_reauthorization(
        self, operation_id: str, now: datetime, trigger: Trigger = Trigger.REQUEST
    ) -> Operation:
        """A new authorization for what is still to capture, before the current one lapses."""
        self._allowed(Move.REQUEST_REAUTHORIZATION)
        if self.capture_pending or self.void_requested is not None or not self.capturable:
            raise InvalidTransition(
                self.status, Move.REQUEST_REAUTHORIZATION, "captures or a void are under way"
            )
        self._move(Move.REQUEST_REAUTHORIZATION, Status.REAUTHORIZING)
        self.reauthorization_tried_for = self.authorization_reference
        operation = Operation(
            operation_id,
            OperationKind.REAUTHORIZE,
            self.capturable,
            self.authorization_reference,
            trigger,
        )
        return self._requested(operation, now)

    def set_trial_window(self, ends_at: datetime, now: datetime) -> None:
        self._allowed(Move.SET_TRIAL_WINDOW)
        if self.method is not Method.TRY_BEFORE_YOU_BUY:
            raise PaymentRefused("ends_at", "only a try-before-you-buy payment has a trial window")
        self.trial_ends_at = ends_at
        # A new window is a new chance for the automatic steps.
        self.reauthorization_tried_for = self.trial_capture_tried_for = None
        self._record(ChangeKind.TRIAL_WINDOW_SET, now, expires_at=ends_at)

    # -- outcomes --

    def resolve(self, operation: Operation, outcome: Outcome, now: datetime) -> str | None:
        """Apply the PSP's decision on ``operation``. Returns the reference of an authorization
        that is no longer needed and should be released at the PSP, if any."""
        kind = operation.kind
        if kind is OperationKind.AUTHORIZE:
            self._authorization_resolved(operation, outcome, now)
        elif kind is OperationKind.REAUTHORIZE:
            return self._reauthorization_resolved(operation, outcome, now)
        elif kind is OperationKind.CAPTURE:
            self._capture_resolved(operation, outcome, now)
        elif kind is OperationKind.VOID:
            self._void_resolved(operation, outcome, now)
        elif kind is OperationKind.REFUND:
            self._refund_resolved(operation, outcome, now)
        return None

    def abandon_authorization(self, now: datetime) -> None:
        """A void came while the authorization was in doubt, and the PSP never received it:
        the payment ends voided, nothing held."""
        if self.void_requested is None:
            raise InvalidTransition(self.status, Move.ABANDON_AUTHORIZATION, "no void requested")
        self._move(Move.ABANDON_AUTHORIZATION, Status.VOIDED)
        void = Operation(self.void_requested, OperationKind.VOID, 0)
        self.void_requested = None
        self._record(ChangeKind.VOIDED, now, operation=void)

    def _authorization_resolved(
        self, operation: Operation, outcome: Outcome, now: datetime
    ) -> None:
        if not outcome.approved:
            self._move(Move.AUTHORIZATION_DECLINED, Status.DECLINED)
            self._failed(ChangeKind.DECLINED, operation, outcome, now)
            return
        self._move(Move.AUTHORIZATION_APPROVED, Status.AUTHORIZED)
        self.authorized = operation.amount
        self._new_authorization(outcome)
        self._record(
            ChangeKind.AUTHORIZED,
            now,
            amount=operation.amount,
            operation=operation,
            expires_at=outcome.expires_at,
        )

    def _reauthorization_resolved(
        self, operation: Operation, outcome: Outcome, now: datetime
    ) -> str | None:
        self._move(Move.REAUTHORIZATION_RESOLVED, Status.AUTHORIZED)
        if not outcome.approved:
            self._failed(ChangeKind.OPERATION_FAILED, operation, outcome, now)
            return None
        replaced = self.authorization_reference
        self._new_authorization(outcome)
        self._record(
            ChangeKind.REAUTHORIZED,
            now,
            amount=operation.amount,
            operation=operation,
            expires_at=outcome.expires_at,
        )
        return replaced

    def _capture_resolved(self, operation: Operation, outcome: Outcome, now: datetime) -> None:
        self._allowed(Move.CAPTURE_RESOLVED)
        self.capture_pending -= operation.amount
        if not outcome.approved:
            self._failed(ChangeKind.OPERATION_FAILED, operation, outcome, now)
            return
        self.captured += operation.amount
        if not self.capturable and not self.capture_pending:
            self._move(Move.CAPTURE_RESOLVED, Status.SETTLED)
        self._record(ChangeKind.CAPTURED, now, amount=operation.amount, operation=operation)
        if self.status is Status.SETTLED and self.void_requested is not None:
            # Everything was captured after all: the void that waited has nothing to release.
            void = Operation(self.void_requested, OperationKind.VOID, 0)
            self.void_requested = None
            self._record(ChangeKind.VOIDED, now, operation=void)

    def _void_resolved(self, operation: Operation, outcome: Outcome, now: datetime) -> None:
        self.void_requested = None
        if not outcome.approved:
            self._move(Move.VOID_RESOLVED, Status.AUTHORIZED)
            self._failed(ChangeKind.OPERATION_FAILED, operation, outcome, now)
            return
        self.released += operation.amount
        self._move(Move.VOID_RESOLVED, Status.SETTLED if self.captured else Status.VOIDED)
        self._record(ChangeKind.VOIDED, now, amount=operation.amount, operation=operation)

    def _refund_resolved(self, operation: Operation, outcome: Outcome, now: datetime) -> None:
        self._allowed(Move.REFUND_RESOLVED)
        self.refund_pending -= operation.amount
        if not outcome.approved:
            self._failed(ChangeKind.OPERATION_FAILED, operation, outcome, now)
            return
        self.refunded += operation.amount
        if self.status is Status.SETTLED and self.refunded == self.captured:
            self._move(Move.REFUND_RESOLVED, Status.REFUNDED)
        self._record(ChangeKind.REFUNDED, now, amount=operation.amount, operation=operation)

    # -- what time makes due --

    def timetable(self, lead: timedelta) -> list[tuple[datetime, Step]]:
        """When each automatic step falls due. ``lead``: how long before an authorization
        lapses it is renewed (try before you buy) or its expiry announced (otherwise)."""
        if self.status is not Status.AUTHORIZED or self.capture_pending:
            return []  # a resolution will change the payment and its timetable
        if self.void_requested is not None:
            return [(EPOCH, Step.VOID)]
        table: list[tuple[datetime, Step]] = []
        reference, expires = self.authorization_reference, self.authorization_expires_at
        if self._in_trial() and self.trial_ends_at and self.trial_capture_tried_for != reference:
            table.append((self.trial_ends_at, Step.CAPTURE_REMAINDER))
        if expires is not None:
            held_beyond = self._in_trial() and (
                self.trial_ends_at is None or self.trial_ends_at > expires
            )
            if held_beyond and self.reauthorization_tried_for != reference:
                table.append((expires - lead, Step.REAUTHORIZE))
            elif self.expiry_warned_for != reference:
                table.append((expires - lead, Step.WARN_EXPIRY))
            table.append((expires, Step.EXPIRE))
        return table

    def next_check(self, lead: timedelta) -> datetime | None:
        """The first instant some step falls due; None while nothing ever will by itself."""
        return min((at for at, _ in self.timetable(lead)), default=None)

    def due_step(self, now: datetime, lead: timedelta) -> Step:
        due = {step for at, step in self.timetable(lead) if at <= now}
        return next((step for step in STEP_PRIORITY if step in due), Step.NONE)

    def perform_due_step(
        self, operation_id: str, now: datetime, lead: timedelta
    ) -> Operation | None:
        """Take the step that is due, if any; returns the operation to send to the PSP."""
        step = self.due_step(now, lead)
        if step is Step.VOID:
            assert self.void_requested is not None
            return self._start_void(self.void_requested, Trigger.VOID_REQUESTED, now)
        if step is Step.REAUTHORIZE:
            return self.request_reauthorization(operation_id, now, Trigger.AUTHORIZATION_EXPIRING)
        if step is Step.CAPTURE_REMAINDER:
            self.trial_capture_tried_for = self.authorization_reference
            return self.request_capture(
                operation_id, self.capturable, now, Trigger.TRIAL_WINDOW_CLOSED
            )
        if step is Step.EXPIRE:
            self.expire(now)
        elif step is Step.WARN_EXPIRY:
            self._allowed(Move.WARN_EXPIRY)
            self.expiry_warned_for = self.authorization_reference
            self._record(ChangeKind.EXPIRING, now, expires_at=self.authorization_expires_at)
        return None

    def expire(self, now: datetime) -> None:
        """The authorization lapsed: what it still held is released."""
        self._allowed(Move.EXPIRE)
        if self.capture_pending:
            raise InvalidTransition(self.status, Move.EXPIRE, "captures are under way")
        lapsed = self.capturable
        self.released += lapsed
        self.void_requested = None  # nothing is left for it to release
        self._move(Move.EXPIRE, Status.SETTLED if self.captured else Status.EXPIRED)
        self._record(ChangeKind.EXPIRED, now, amount=lapsed)

    # -- helpers --

    def _in_trial(self) -> bool:
        return self.method is Method.TRY_BEFORE_YOU_BUY

    def _start_void(self, operation_id: str, trigger: Trigger, now: datetime) -> Operation:
        self._move(Move.REQUEST_VOID, Status.VOIDING)
        self.void_requested = operation_id  # cleared by the outcome
        operation = Operation(
            operation_id, OperationKind.VOID, self.capturable, self.authorization_reference, trigger
        )
        return self._requested(operation, now)

    def _new_authorization(self, outcome: Outcome) -> None:
        self.authorization_reference = outcome.reference
        self.authorization_expires_at = outcome.expires_at

    def _requested(self, operation: Operation, now: datetime) -> Operation:
        self._record(
            ChangeKind.OPERATION_REQUESTED, now, amount=operation.amount, operation=operation
        )
        return operation

    def _failed(
        self, kind: ChangeKind, operation: Operation, outcome: Outcome, now: datetime
    ) -> None:
        reason = outcome.reason or "refused"
        self._record(kind, now, amount=operation.amount, operation=operation, reason=reason)

    def _allowed(self, move: Move) -> frozenset[Status]:
        allowed = TRANSITIONS[self.status].get(move)
        if allowed is None:
            raise InvalidTransition(self.status, move)
        return allowed

    def _move(self, move: Move, target: Status) -> None:
        if target not in self._allowed(move):
            raise InvalidTransition(self.status, move, f"not to {target}")
        self.status = target

    def _record(
        self,
        kind: ChangeKind,
        now: datetime,
        *,
        amount: int = 0,
        operation: Operation | None = None,
        reason: str | None = None,
        expires_at: datetime | None = None,
    ) -> None:
        self.version += 1
        self.changes.append(
            Change(
                kind,
                self.version,
                now,
                self.status,
                amount,
                operation,
                reason,
                expires_at,
                self.captured,
                self.capturable,
                self.refunded,
            )
        )
