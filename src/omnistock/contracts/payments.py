"""Events of the payments service.

One stream, keyed by order id (so that an order's saga reads its payment events in order, on the
partition of its own events); the subject is the payment id and ``aggregateversion`` its version.
Every event carries the payment's ``status`` after the change and its ``version``: a reader
keeps the highest version it has seen and drops older ones. Amounts are integers in minor units
of ``currency``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from omnistock.platform.events import event_type
from omnistock.platform.kafka import TopicSpec

PAYMENTS = TopicSpec(
    "omnistock.payments.payments.v1",
    description="Payment lifecycle: authorizations, captures, voids, refunds, expiry; "
    "keyed by order id.",
)
TOPICS = [PAYMENTS]


@event_type
@dataclass(frozen=True, slots=True)
class PaymentCreated:
    """A payment intent was created for an order; nothing is asked of the PSP yet."""

    TYPE: ClassVar[str] = "omnistock.payments.payment-created.v1"
    TOPIC: ClassVar[str] = PAYMENTS.name

    payment_id: str
    order_id: str
    customer_id: str
    version: int
    status: str
    method: str
    amount: int
    currency: str


@event_type
@dataclass(frozen=True, slots=True)
class OperationRequested:
    """A call to the PSP was recorded and is under way: ``operation`` is one of authorize,
    reauthorize, capture, void, refund; ``trigger`` says who asked (``request`` for an API
    call; ``trial-window-closed``, ``authorization-expiring`` or ``void-requested`` for the
    service itself)."""

    TYPE: ClassVar[str] = "omnistock.payments.operation-requested.v1"
    TOPIC: ClassVar[str] = PAYMENTS.name

    payment_id: str
    order_id: str
    version: int
    status: str
    operation: str
    operation_id: str
    amount: int
    currency: str
    trigger: str


@event_type
@dataclass(frozen=True, slots=True)
class PaymentAuthorized:
    """The PSP holds ``amount`` for the payment (for a deferred method: it approved it) until
    ``expires_at``."""

    TYPE: ClassVar[str] = "omnistock.payments.payment-authorized.v1"
    TOPIC: ClassVar[str] = PAYMENTS.name

    payment_id: str
    order_id: str
    version: int
    status: str
    operation_id: str
    amount: int
    currency: str
    expires_at: str | None


@event_type
@dataclass(frozen=True, slots=True)
class PaymentDeclined:
    """The PSP refused the authorization; the payment is over (an order retries with a new one)."""

    TYPE: ClassVar[str] = "omnistock.payments.payment-declined.v1"
    TOPIC: ClassVar[str] = PAYMENTS.name

    payment_id: str
    order_id: str
    version: int
    status: str
    operation_id: str
    amount: int
    currency: str
    reason: str


@event_type
@dataclass(frozen=True, slots=True)
class PaymentReauthorized:
    """A new authorization replaced the one about to expire; it holds ``amount`` (what was
    still to capture) until ``expires_at``."""

    TYPE: ClassVar[str] = "omnistock.payments.payment-reauthorized.v1"
    TOPIC: ClassVar[str] = PAYMENTS.name

    payment_id: str
    order_id: str
    version: int
    status: str
    operation_id: str
    amount: int
    currency: str
    expires_at: str | None


@event_type
@dataclass(frozen=True, slots=True)
class PaymentCaptured:
    """``amount`` was charged; ``captured`` is the total so far, ``capturable`` what the
    authorization still holds."""

    TYPE: ClassVar[str] = "omnistock.payments.payment-captured.v1"
    TOPIC: ClassVar[str] = PAYMENTS.name

    payment_id: str
    order_id: str
    version: int
    status: str
    operation_id: str
    amount: int
    currency: str
    captured: int
    capturable: int


@event_type
@dataclass(frozen=True, slots=True)
class PaymentVoided:
    """The uncaptured remainder (``amount``) was released; ``captured`` stays charged."""

    TYPE: ClassVar[str] = "omnistock.payments.payment-voided.v1"
    TOPIC: ClassVar[str] = PAYMENTS.name

    payment_id: str
    order_id: str
    version: int
    status: str
    operation_id: str
    amount: int
    currency: str
    captured: int


@event_type
@dataclass(frozen=True, slots=True)
class PaymentRefunded:
    """``amount`` of what was captured was given back; ``refunded`` is the total so far."""

    TYPE: ClassVar[str] = "omnistock.payments.payment-refunded.v1"
    TOPIC: ClassVar[str] = PAYMENTS.name

    payment_id: str
    order_id: str
    version: int
    status: str
    operation_id: str
    amount: int
    currency: str
    refunded: int


@event_type
@dataclass(frozen=True, slots=True)
class OperationFailed:
    """The PSP refused a reauthorize, capture, void or refund; the payment is as before it."""

    TYPE: ClassVar[str] = "omnistock.payments.operation-failed.v1"
    TOPIC: ClassVar[str] = PAYMENTS.name

    payment_id: str
    order_id: str
    version: int
    status: str
    operation: str
    operation_id: str
    amount: int
    currency: str
    reason: str


@event_type
@dataclass(frozen=True, slots=True)
class AuthorizationExpiring:
    """The authorization lapses at ``expires_at`` and will not be renewed: capture or void
    ``capturable`` before then."""

    TYPE: ClassVar[str] = "omnistock.payments.authorization-expiring.v1"
    TOPIC: ClassVar[str] = PAYMENTS.name

    payment_id: str
    order_id: str
    version: int
    status: str
    expires_at: str
    capturable: int
    currency: str


@event_type
@dataclass(frozen=True, slots=True)
class AuthorizationExpired:
    """The authorization lapsed; ``amount`` was never captured and is no longer held."""

    TYPE: ClassVar[str] = "omnistock.payments.authorization-expired.v1"
    TOPIC: ClassVar[str] = PAYMENTS.name

    payment_id: str
    order_id: str
    version: int
    status: str
    amount: int
    currency: str
    captured: int


@event_type
@dataclass(frozen=True, slots=True)
class TrialWindowSet:
    """A try-before-you-buy payment is held until ``ends_at``; what is still uncaptured then is
    charged."""

    TYPE: ClassVar[str] = "omnistock.payments.trial-window-set.v1"
    TOPIC: ClassVar[str] = PAYMENTS.name

    payment_id: str
    order_id: str
    version: int
    status: str
    ends_at: str
