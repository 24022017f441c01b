"""Creating reservations, many per transaction.

Under a flash sale every checkout wants the same SKU, and one transaction per checkout would
queue them all on that SKU's lock: PostgreSQL's ceiling for one hot row is about 2,000
transactions per second here. ``ReservationBatcher`` lets concurrent requests share a
transaction instead (group commit): the SKU locks are taken once, the stock read once, each
request planned in arrival order against the stock the previous ones left, and everything
written and committed together. At low load a batch is one request and nothing waits.

Batches whose SKUs differ run side by side, so that one is planned in Python while the other
is in the database; requests for a SKU that a running batch holds wait for it to end (they
would only queue on the SKU's lock otherwise).
"""

from omnistock.inventory.reserving.batcher import ReservationBatcher, ServiceStopping
from omnistock.inventory.reserving.store import AnswerKey
from omnistock.inventory.reserving.transaction import (
    CUSTOMER_LIMIT_WINDOW,
    DEFAULT_TTL,
    MAX_TTL,
    REFUSALS,
    CustomerIdRequired,
    CustomerLimitExceeded,
    NotFound,
    Outcome,
    OutOfStock,
    ReserveStock,
    reservation_view,
    reserve_many,
)

__all__ = [
    "CUSTOMER_LIMIT_WINDOW",
    "DEFAULT_TTL",
    "MAX_TTL",
    "REFUSALS",
    "AnswerKey",
    "CustomerIdRequired",
    "CustomerLimitExceeded",
    "NotFound",
    "OutOfStock",
    "Outcome",
    "ReservationBatcher",
    "ReserveStock",
    "ServiceStopping",
    "reservation_view",
    "reserve_many",
]
