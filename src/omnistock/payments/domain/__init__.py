"""Payment rules, pure: money in integer minor units, time passed in, every move checked against
one transition table.

A payment is the money side of one order. Its authorization holds ``authorized`` at the PSP;
captures take from it, a void or an expiry releases what is left, refunds give back what was
captured. Every call to the PSP is an *operation*: requested first (its amount counted against
the payment at once, so that concurrent requests can never overcommit it), resolved later by the
PSP's answer, its webhook or the recovery job, whichever comes first. While an authorization,
re-authorization or void is at the PSP the payment sits in a pending state that locks out
conflicting moves.
"""

from omnistock.payments.domain.payment import Payment
from omnistock.payments.domain.rules import (
    CURRENCIES,
    MAX_AMOUNT,
    TERMINAL,
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

__all__ = [
    "CURRENCIES",
    "MAX_AMOUNT",
    "TERMINAL",
    "TRANSITIONS",
    "Change",
    "ChangeKind",
    "InvalidTransition",
    "Method",
    "Move",
    "Operation",
    "OperationKind",
    "Outcome",
    "Payment",
    "PaymentRefused",
    "Status",
    "Step",
    "Trigger",
    "allocate_refund",
    "check_amount",
    "check_currency",
]
