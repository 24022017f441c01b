"""Pricing rules, pure: money in integer minor units, time always passed in (UTC).

A SKU's prices in one channel form a timeline: base prices that apply from a moment on, and
sales that apply within [start, end). The effective price at an instant is the sale's if one is
running, else the base price. EU Omnibus (Directive 98/6/EC, art. 6a): while a reduction is
announced, the shop must show the lowest price it applied in the 30 days before the reduction
began. Back-to-back sales are one reduction: it began when the first of them started.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

OMNIBUS_WINDOW = timedelta(days=30)

# ISO 4217 minor units of the currencies of the markets we sell in (and a few neighbours).
MINOR_UNITS: dict[str, int] = {
    "EUR": 2, "PLN": 2, "CZK": 2, "HUF": 2, "RON": 2, "BGN": 2, "HRK": 2, "SEK": 2, "DKK": 2,
    "NOK": 2, "CHF": 2, "GBP": 2, "UAH": 2, "RSD": 2, "BAM": 2, "MKD": 2, "ALL": 2, "MDL": 2,
    "GEL": 2, "TRY": 2, "USD": 2, "KZT": 2, "ISK": 0, "JPY": 0, "KRW": 0, "CLP": 0,
    "KWD": 3, "BHD": 3, "JOD": 3, "OMR": 3, "TND": 3,
}  # fmt: skip


class PricingError(ValueError):
    """Bad pricing input; ``field`` names what to fix."""

    def __init__(self, field: str, message: str, sku: str | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.sku = field, message, sku

    def at(self, prefix: str, sku: str) -> PricingError:
        """The same error for the line ``prefix`` of a request, about ``sku``."""
        return PricingError(f"{prefix}.{self.field}", self.message, sku)


def minor_units(currency: str) -> int:
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise PricingError("currency", f"unknown or unsupported currency {currency!r}") from None


def to_minor(amount: str, currency: str) -> int:
    """'129.99' PLN → 12999; rounds half to even at the currency's own precision."""
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise PricingError("amount", f"not a number: {amount!r}") from None
    if not value.is_finite() or value < 0:
        raise PricingError("amount", "must be a finite amount of at least 0")
    units = minor_units(currency)
    return int((value * (10**units)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def format_minor(amount: int, currency: str) -> str:
    units = minor_units(currency)
    return f"{Decimal(amount).scaleb(-units):.{units}f}"


@dataclass(frozen=True, slots=True)
class BasePrice:
    """The regular price from ``valid_from`` on, until the next base price."""

    valid_from: datetime
    amount: int


@dataclass(frozen=True, slots=True)
class Sale:
    """A reduced price within [start, end)."""

    start: datetime
    end: datetime
    amount: int


@dataclass(frozen=True, slots=True)
class Quote:
    """What a storefront shows at an instant."""

    effective: int
    regular: int
    reduced: bool  # a sale is running: the storefront shows a reduction
    lowest_30d: int | None  # while reduced: the lowest price of the 30 days before it began
    valid_until: datetime | None  # the next moment the price changes, if one is scheduled


def check_sale(sale: Sale, others: Sequence[Sale]) -> None:
    """A sale ends after it starts and overlaps no other sale of the SKU."""
    if sale.amount < 0:
        raise PricingError("amount", "must be at least 0")
    if sale.end <= sale.start:
        raise PricingError("ends_at", "must be after starts_at")
    for other in others:
        if sale.start < other.end and other.start < sale.end:
            raise PricingError(
                "starts_at",
                f"overlaps the sale from {other.start.isoformat()} to {other.end.isoformat()}",
            )


@dataclass(frozen=True, slots=True)
class Timeline:
    """Every base price and sale of one SKU in one channel."""

    bases: tuple[BasePrice, ...]
    sales: tuple[Sale, ...] = ()

    @classmethod
    def of(cls, bases: Sequence[BasePrice], sales: Sequence[Sale] = ()) -> Timeline:
        return cls(
            tuple(sorted(bases, key=lambda b: b.valid_from)),
            tuple(sorted(sales, key=lambda s: s.start)),
        )

    def regular(self, at: datetime) -> int | None:
        current = None
        for base in self.bases:
            if base.valid_from > at:
                break
            current = base.amount
        return current

    def sale_at(self, at: datetime) -> Sale | None:
        for sale in self.sales:
            if sale.start <= at < sale.end:
                return sale
        return None

    def effective(self, at: datetime) -> int | None:
        sale = self.sale_at(at)
        return sale.amount if sale is not None else self.regular(at)

    def changes(self) -> list[datetime]:
        """Every instant at which the effective price may change."""
        moments = {b.valid_from for b in self.bases}
        for sale in self.sales:
            moments.update((sale.start, sale.end))
        return sorted(moments)

    def reduction_began(self, at: datetime) -> datetime | None:
        """When the reduction shown at ``at`` began; back-to-back sales are one reduction."""
        sale = self.sale_at(at)
        if sale is None:
            return None
        began = sale.start
        while (earlier := self.sale_at(began - timedelta(microseconds=1))) is not None:
            began = earlier.start
        return began

    def lowest(self, start: datetime, end: datetime) -> int | None:
        """The lowest effective price applied within [start, end)."""
        moments = [start, *(m for m in self.changes() if start < m < end)]
        prices = [p for m in moments if (p := self.effective(m)) is not None]
        return min(prices) if prices else None

    def quote(self, at: datetime) -> Quote | None:
        effective, regular = self.effective(at), self.regular(at)
        if effective is None or regular is None:
            return None
        began = self.reduction_began(at)
        lowest = None if began is None else self.lowest(began - OMNIBUS_WINDOW, began)
        upcoming = [m for m in self.changes() if m > at]
        return Quote(
            effective, regular, began is not None, lowest, upcoming[0] if upcoming else None
        )
