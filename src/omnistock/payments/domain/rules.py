"""The vocabulary of payments: states and the one table of moves between them, operations,
outcomes, recorded changes, and the money rules every move obeys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

MAX_AMOUNT = 10**15  # minor units; more is a typo, not an order

# ISO 4217 codes of the markets we sell in and their neighbours.
CURRENCIES = frozenset({
    "EUR", "PLN", "CZK", "HUF", "RON", "BGN", "SEK", "DKK", "NOK", "CHF", "GBP", "UAH", "RSD",
    "BAM", "MKD", "ALL", "MDL", "GEL", "TRY", "USD", "KZT", "ISK", "JPY", "KRW", "CLP", "KWD",
    "BHD", "JOD", "OMR", "TND",
})  # fmt: skip
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # "due at once" in a timetable


class Method(StrEnum):
    CARD = "card"
    PAY_LATER = "pay_later"
    TRY_BEFORE_YOU_BUY = "try_before_you_buy"


class Status(StrEnum):
    CREATED = "created"  # the intent: nothing asked of the PSP yet
    AUTHORIZING = "authorizing"  # an authorization is at the PSP
    AUTHORIZED = "authorized"  # money held: captures and refunds of what was captured
    REAUTHORIZING = "reauthorizing"  # a new authorization for the remainder is at the PSP
    VOIDING = "voiding"  # the remainder is being released
    SETTLED = "settled"  # nothing left to capture, something captured: refunds only
    REFUNDED = "refunded"  # everything captured was given back
    DECLINED = "declined"
    VOIDED = "voided"  # released with nothing captured
    EXPIRED = "expired"  # the authorization lapsed with nothing captured


class Move(StrEnum):
    REQUEST_AUTHORIZATION = "request authorization"
    AUTHORIZATION_APPROVED = "authorization approved"
    AUTHORIZATION_DECLINED = "authorization declined"
    ABANDON_AUTHORIZATION = "abandon authorization"
    REQUEST_REAUTHORIZATION = "request reauthorization"
    REAUTHORIZATION_RESOLVED = "reauthorization resolved"
    REQUEST_CAPTURE = "request capture"
    CAPTURE_RESOLVED = "capture resolved"
    REQUEST_VOID = "request void"
    VOID_RESOLVED = "void resolved"
    REQUEST_REFUND = "request refund"
    REFUND_RESOLVED = "refund resolved"
    SET_TRIAL_WINDOW = "set trial window"
    WARN_EXPIRY = "warn of expiry"
    EXPIRE = "expire"


S, M = Status, Move
_REFUNDS = (M.REQUEST_REFUND, M.REFUND_RESOLVED)

# The only moves a payment makes, and where each may lead; anything else is InvalidTransition.
TRANSITIONS: dict[Status, dict[Move, frozenset[Status]]] = {
    S.CREATED: {
        M.REQUEST_AUTHORIZATION: frozenset({S.AUTHORIZING}),
        M.REQUEST_VOID: frozenset({S.VOIDED}),
        M.SET_TRIAL_WINDOW: frozenset({S.CREATED}),
    },
    S.AUTHORIZING: {
        M.AUTHORIZATION_APPROVED: frozenset({S.AUTHORIZED}),
        M.AUTHORIZATION_DECLINED: frozenset({S.DECLINED}),
        M.ABANDON_AUTHORIZATION: frozenset({S.VOIDED}),
        M.REQUEST_VOID: frozenset({S.AUTHORIZING}),  # remembered: voided once authorized
        M.SET_TRIAL_WINDOW: frozenset({S.AUTHORIZING}),
    },
    S.AUTHORIZED: {
        M.REQUEST_CAPTURE: frozenset({S.AUTHORIZED}),
        M.CAPTURE_RESOLVED: frozenset({S.AUTHORIZED, S.SETTLED}),
        M.REQUEST_VOID: frozenset({S.VOIDING, S.AUTHORIZED}),  # the latter: once captures end
        M.REQUEST_REAUTHORIZATION: frozenset({S.REAUTHORIZING}),
        M.SET_TRIAL_WINDOW: frozenset({S.AUTHORIZED}),
        M.WARN_EXPIRY: frozenset({S.AUTHORIZED}),
        M.EXPIRE: frozenset({S.EXPIRED, S.SETTLED}),
        **dict.fromkeys(_REFUNDS, frozenset({S.AUTHORIZED})),
    },
    S.REAUTHORIZING: {
        M.REAUTHORIZATION_RESOLVED: frozenset({S.AUTHORIZED}),
        M.REQUEST_VOID: frozenset({S.REAUTHORIZING}),
        M.SET_TRIAL_WINDOW: frozenset({S.REAUTHORIZING}),
        **dict.fromkeys(_REFUNDS, frozenset({S.REAUTHORIZING})),
    },
    S.VOIDING: {
        M.VOID_RESOLVED: frozenset({S.VOIDED, S.SETTLED, S.AUTHORIZED}),
        **dict.fromkeys(_REFUNDS, frozenset({S.VOIDING})),
    },
    S.SETTLED: {
        M.REQUEST_REFUND: frozenset({S.SETTLED}),
        M.REFUND_RESOLVED: frozenset({S.SETTLED, S.REFUNDED}),
    },
    S.REFUNDED: {},
    S.DECLINED: {},
    S.VOIDED: {},
    S.EXPIRED: {},
}
TERMINAL = frozenset(status for status, moves in TRANSITIONS.items() if not moves)


class OperationKind(StrEnum):
    AUTHORIZE = "authorize"
    REAUTHORIZE = "reauthorize"
    CAPTURE = "capture"
    VOID = "void"
    REFUND = "refund"
    RELEASE = "release"  # void of a replaced authorization: PSP housekeeping, the payment is as is


class Trigger(StrEnum):
    REQUEST = "request"
    TRIAL_WINDOW_CLOSED = "trial-window-closed"
    AUTHORIZATION_EXPIRING = "authorization-expiring"
    VOID_REQUESTED = "void-requested"  # a void asked for while the payment was busy


class Step(StrEnum):
    """Work that time makes due; see ``Payment.due_step``."""

    NONE = "none"
    VOID = "void"
    REAUTHORIZE = "reauthorize"
    CAPTURE_REMAINDER = "capture remainder"
    EXPIRE = "expire"
    WARN_EXPIRY = "warn of expiry"


STEP_PRIORITY = [Step.VOID, Step.REAUTHORIZE, Step.CAPTURE_REMAINDER, Step.EXPIRE, Step.WARN_EXPIRY]


class ChangeKind(StrEnum):
    CREATED = "created"
    OPERATION_REQUESTED = "operation-requested"
    AUTHORIZED = "authorized"
    DECLINED = "declined"
    REAUTHORIZED = "reauthorized"
    CAPTURED = "captured"
    VOIDED = "voided"
    REFUNDED = "refunded"
    OPERATION_FAILED = "operation-failed"
    EXPIRING = "expiring"
    EXPIRED = "expired"
    TRIAL_WINDOW_SET = "trial-window-set"


class InvalidTransition(Exception):
    def __init__(self, status: Status, move: Move, why: str | None = None) -> None:
        super().__init__(f"a payment that is {status} cannot {move}" + (f": {why}" if why else ""))
        self.status, self.move = status, move


class PaymentRefused(ValueError):
    """Input the rules refuse; ``field`` names what to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@dataclass(frozen=True, slots=True)
class Operation:
    """A call to the PSP; its id is also the idempotency key the PSP sees."""

    operation_id: str
    kind: OperationKind
    amount: int
    target_reference: str | None = None  # the authorization or capture it acts on
    trigger: Trigger = Trigger.REQUEST


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the PSP decided about an operation."""

    approved: bool
    reference: str | None = None
    reason: str | None = None
    expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One version of a payment: what happened, and the status it left the payment in."""

    kind: ChangeKind
    version: int
    at: datetime
    status: Status
    amount: int = 0
    operation: Operation | None = None
    reason: str | None = None
    expires_at: datetime | None = None
    # The payment's totals right after the change.
    captured: int = 0
    capturable: int = 0
    refunded: int = 0


def check_amount(field_name: str, amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or not 1 <= amount <= MAX_AMOUNT:
        raise PaymentRefused(field_name, f"a whole number of minor units, 1 to {MAX_AMOUNT}")


def check_currency(currency: str) -> None:
    if currency not in CURRENCIES:
        raise PaymentRefused("currency", f"unknown or unsupported currency {currency!r}")


def allocate_refund(refundable: Sequence[tuple[str, int]], amount: int) -> list[tuple[str, int]]:
    """Split a refund over captures (reference, still refundable), oldest first: a PSP refunds
    a capture, never more than it charged."""
    parts, left = [], amount
    for reference, available in refundable:
        if left == 0:
            break
        take = min(left, available)
        if take > 0:
            parts.append((reference, take))
            left -= take
    if left:
        raise PaymentRefused("amount", f"at most {amount - left} can be refunded")
    return parts
