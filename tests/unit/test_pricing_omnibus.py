"""Worked examples of the EU Omnibus rule and of the price timeline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnistock.pricing.domain import (
    BasePrice,
    PricingError,
    Sale,
    Timeline,
    check_sale,
    format_minor,
    to_minor,
)

DAY0 = datetime(2026, 3, 1, tzinfo=UTC)


def day(n: float) -> datetime:
    return DAY0 + timedelta(days=n)


def test_a_sale_right_after_a_price_increase_shows_the_price_before_the_increase() -> None:
    # 100 for months, raised to 150 on day 0, "reduced" to 120 on day 1: 100 is the reference.
    timeline = Timeline.of(
        [BasePrice(day(-90), 10_000), BasePrice(day(0), 15_000)], [Sale(day(1), day(8), 12_000)]
    )
    quote = timeline.quote(day(2))
    assert quote is not None
    assert (quote.effective, quote.regular, quote.reduced) == (12_000, 15_000, True)
    assert quote.lowest_30d == 10_000
    assert quote.valid_until == day(8)


def test_two_back_to_back_sales_are_one_reduction() -> None:
    # 200, then 160 for a week, then straight on to 140: the reference stays 200.
    timeline = Timeline.of(
        [BasePrice(day(-60), 20_000)],
        [Sale(day(0), day(7), 16_000), Sale(day(7), day(14), 14_000)],
    )
    second = timeline.quote(day(10))
    assert second is not None
    assert second.effective == 14_000
    assert second.lowest_30d == 20_000


def test_a_reduction_on_day_29_and_on_day_31_after_a_price_change() -> None:
    # 100 until day 0, 120 from day 0. A reduction to 90 on day 29 still has 100 within its
    # 30-day window; one on day 31 does not.
    bases = [BasePrice(day(-100), 10_000), BasePrice(day(0), 12_000)]
    on_day_29 = Timeline.of(bases, [Sale(day(29), day(35), 9_000)]).quote(day(30))
    on_day_31 = Timeline.of(bases, [Sale(day(31), day(35), 9_000)]).quote(day(32))
    assert on_day_29 is not None
    assert on_day_31 is not None
    assert on_day_29.lowest_30d == 10_000
    assert on_day_31.lowest_30d == 12_000


def test_a_sale_that_ends_and_starts_again_counts_the_first_sale_price() -> None:
    # 100 regular; 70 from day 0 to day 5; back to 100; 80 from day 10: the lowest of the
    # 30 days before day 10 was 70.
    timeline = Timeline.of(
        [BasePrice(day(-90), 10_000)], [Sale(day(0), day(5), 7_000), Sale(day(10), day(15), 8_000)]
    )
    between = timeline.quote(day(7))
    again = timeline.quote(day(11))
    assert between is not None
    assert again is not None
    assert (between.effective, between.reduced, between.lowest_30d) == (10_000, False, None)
    assert (again.effective, again.lowest_30d) == (8_000, 7_000)


def test_the_sale_window_is_half_open_and_prices_change_exactly_at_their_instant() -> None:
    timeline = Timeline.of([BasePrice(day(-10), 5_000)], [Sale(day(0), day(1), 4_000)])
    assert timeline.effective(day(0) - timedelta(microseconds=1)) == 5_000
    assert timeline.effective(day(0)) == 4_000
    assert timeline.effective(day(1) - timedelta(microseconds=1)) == 4_000
    assert timeline.effective(day(1)) == 5_000
    assert timeline.quote(day(-20)) is None  # not listed yet


def test_a_product_on_sale_from_its_first_day_has_no_earlier_price() -> None:
    timeline = Timeline.of([BasePrice(day(0), 5_000)], [Sale(day(0), day(3), 4_000)])
    quote = timeline.quote(day(1))
    assert quote is not None
    assert (quote.reduced, quote.lowest_30d) == (True, None)


def test_sales_must_end_after_they_start_and_not_overlap() -> None:
    existing = [Sale(day(0), day(5), 100)]
    with pytest.raises(PricingError) as ended:
        check_sale(Sale(day(9), day(9), 100), existing)
    assert ended.value.field == "ends_at"
    with pytest.raises(PricingError) as overlapping:
        check_sale(Sale(day(4), day(6), 100), existing)
    assert overlapping.value.field == "starts_at"
    check_sale(Sale(day(5), day(6), 100), existing)  # back to back is fine


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("129.99", "PLN", 12_999),
        ("1299", "JPY", 1_299),
        ("0.125", "EUR", 12),
        ("0.135", "EUR", 14),
        ("10.5", "HUF", 1_050),
        ("1.2345", "KWD", 1_234),
    ],
)
def test_amounts_are_integer_minor_units_at_the_currencys_precision(
    amount: str, currency: str, minor: int
) -> None:
    assert to_minor(amount, currency) == minor


def test_bad_money_names_the_field() -> None:
    with pytest.raises(PricingError) as unknown:
        to_minor("1.00", "XYZ")
    assert unknown.value.field == "currency"
    with pytest.raises(PricingError) as negative:
        to_minor("-1", "PLN")
    assert negative.value.field == "amount"
    assert format_minor(12_999, "PLN") == "129.99"
    assert format_minor(1_299, "JPY") == "1299"


@given(
    bases=st.lists(st.tuples(st.integers(-60, 60), st.integers(1, 500)), min_size=1, max_size=5),
    sales=st.lists(
        st.tuples(st.integers(-60, 60), st.integers(1, 10), st.integers(1, 500)), max_size=4
    ),
    at=st.integers(-60, 70),
)
def test_the_lowest_price_is_the_minimum_of_every_hour_of_the_window(
    bases: list[tuple[int, int]], sales: list[tuple[int, int, int]], at: int
) -> None:
    chosen: list[Sale] = []
    for start, length, amount in sales:
        sale = Sale(day(start), day(start + length), amount)
        try:
            check_sale(sale, chosen)
        except PricingError:
            continue
        chosen.append(sale)
    timeline = Timeline.of([BasePrice(day(d), a) for d, a in dict(bases).items()], chosen)
    quote = timeline.quote(day(at))
    if quote is None or not quote.reduced:
        return
    began = timeline.reduction_began(day(at))
    assert began is not None
    assert began <= day(at)
    hours = [began - timedelta(hours=h) for h in range(1, 30 * 24 + 1)]
    seen = [p for moment in hours if (p := timeline.effective(moment)) is not None]
    assert quote.lowest_30d == (min(seen) if seen else None)
