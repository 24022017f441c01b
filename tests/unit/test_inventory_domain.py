from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnistock.inventory.domain import (
    CustomerLimit,
    Hold,
    InvalidTransition,
    Pick,
    ReservationStatus,
    Source,
    StockLevel,
    apply_count,
    channel_available,
    merge_lines,
    plan_reservation,
    transition,
)

T0 = datetime(2026, 11, 29, 12, tzinfo=UTC)
WAREHOUSE = Source("pl-wh", priority=1)
STORE_A = Source("pl-store-a", priority=2, capabilities=frozenset({"ship", "click_and_collect"}))
STORE_B = Source("pl-store-b", priority=3, safety_stock=1)


def levels(*items: tuple[str, str, int, int, int]) -> dict[tuple[str, str], StockLevel]:
    return {(sku, loc): StockLevel(sku, loc, oh, rs, al) for sku, loc, oh, rs, al in items}


def test_two_lines_of_one_sku_count_together() -> None:
    assert merge_lines([("A", 3), ("B", 1), ("A", 3)]) == {"A": 6, "B": 1}
    stock = levels(("A", "pl-wh", 5, 0, 0))
    plan = plan_reservation(merge_lines([("A", 3), ("A", 3)]), [WAREHOUSE], stock)
    assert not plan.complete
    assert plan.shortfalls[0].requested == 6
    assert plan.shortfalls[0].available == 5


def test_available_counts_reserved_allocated_and_safety_stock() -> None:
    stock = levels(("A", "pl-wh", 10, 3, 2), ("A", "pl-store-b", 4, 0, 0))
    assert channel_available("A", [WAREHOUSE, STORE_B], stock, cap=None) == 5 + 3
    assert channel_available("A", [WAREHOUSE, STORE_B], stock, cap=6) == 6
    over_held = levels(("A", "pl-wh", 2, 2, 0), ("A", "pl-store-b", 1, 0, 0))
    assert channel_available("A", [WAREHOUSE, STORE_B], over_held, cap=None) == 0


def test_one_location_covering_the_whole_order_wins_over_priority() -> None:
    stock = levels(
        ("A", "pl-wh", 5, 0, 0),
        ("B", "pl-wh", 0, 0, 0),
        ("A", "pl-store-a", 2, 0, 0),
        ("B", "pl-store-a", 2, 0, 0),
    )
    plan = plan_reservation({"A": 2, "B": 1}, [WAREHOUSE, STORE_A], stock)
    assert plan.picks == (Pick("A", "pl-store-a", 2), Pick("B", "pl-store-a", 1))


def test_a_line_may_draw_on_several_locations() -> None:
    stock = levels(
        ("A", "pl-wh", 2, 0, 0), ("A", "pl-store-a", 2, 1, 0), ("A", "pl-store-b", 6, 0, 0)
    )
    plan = plan_reservation({"A": 7}, [WAREHOUSE, STORE_A, STORE_B], stock)
    assert plan.complete
    assert sum(p.quantity for p in plan.picks) == 7
    assert {p.location_id for p in plan.picks} == {"pl-store-b", "pl-wh"}  # fewest locations


def test_per_line_mode_takes_whole_lines_only() -> None:
    stock = levels(("A", "pl-wh", 1, 0, 0), ("B", "pl-wh", 5, 0, 0))
    plan = plan_reservation({"A": 2, "B": 2}, [WAREHOUSE], stock, all_or_nothing=False)
    assert plan.picks == (Pick("B", "pl-wh", 2),)
    assert [s.sku for s in plan.shortfalls] == ["A"]
    assert plan_reservation({"A": 2, "B": 2}, [WAREHOUSE], stock).picks == ()


def test_click_and_collect_takes_from_the_chosen_store_when_it_has_the_stock() -> None:
    stock = levels(("A", "pl-wh", 9, 0, 0), ("A", "pl-store-a", 1, 0, 0))
    assert plan_reservation(
        {"A": 1}, [WAREHOUSE, STORE_A], stock, pickup_location="pl-store-a"
    ).picks == (Pick("A", "pl-store-a", 1),)
    # Not enough at the store: it ships to the store from the warehouse.
    assert plan_reservation(
        {"A": 2}, [WAREHOUSE, STORE_A], stock, pickup_location="pl-store-a"
    ).picks == (Pick("A", "pl-wh", 2),)


def test_a_count_below_what_is_held_releases_newest_reservations_first() -> None:
    level = StockLevel("A", "pl-wh", on_hand=10, reserved=6, allocated=3)
    reservations = [
        Hold("r-old", 2, T0),
        Hold("r-mid", 2, T0 + timedelta(minutes=1)),
        Hold("r-new", 2, T0 + timedelta(minutes=2)),
    ]
    allocations = [Hold("a-1", 3, T0)]
    outcome = apply_count(level, 5, reservations, allocations)
    assert outcome.delta == -5
    assert outcome.released_reservations == ("r-new", "r-mid")
    assert outcome.released_allocations == ()
    deep = apply_count(level, 1, reservations, allocations)
    assert deep.released_reservations == ("r-new", "r-mid", "r-old")
    assert deep.released_allocations == ("a-1",)
    assert not apply_count(level, 9, reservations, allocations).shortage


def test_reservation_state_machine() -> None:
    assert (
        transition(ReservationStatus.ACTIVE, ReservationStatus.COMMITTED)
        is ReservationStatus.COMMITTED
    )
    for terminal in (
        ReservationStatus.COMMITTED,
        ReservationStatus.RELEASED,
        ReservationStatus.EXPIRED,
    ):
        for target in ReservationStatus:
            with pytest.raises(InvalidTransition):
                transition(terminal, target)


def test_customer_limit_counts_what_the_customer_already_holds() -> None:
    limit = CustomerLimit(2, {"A": 1})
    assert limit.excess({"A": 1, "B": 2}) == {}
    assert limit.excess({"A": 2}) == {"A": 1}
    assert CustomerLimit(None).excess({"A": 99}) == {}


@given(
    on_hand=st.lists(st.integers(0, 20), min_size=3, max_size=3),
    held=st.lists(st.integers(0, 20), min_size=3, max_size=3),
    wanted=st.dictionaries(st.sampled_from(["A", "B"]), st.integers(1, 30), min_size=1),
    cap=st.none() | st.integers(0, 40),
    all_or_nothing=st.booleans(),
)
def test_a_plan_never_takes_more_than_is_free(
    on_hand: list[int],
    held: list[int],
    wanted: dict[str, int],
    cap: int | None,
    all_or_nothing: bool,
) -> None:
    sources = [WAREHOUSE, STORE_A, STORE_B]
    stock = {
        (sku, s.location_id): StockLevel(sku, s.location_id, oh, min(h, oh), 0)
        for sku in ("A", "B")
        for s, oh, h in zip(sources, on_hand, held, strict=True)
    }
    plan = plan_reservation(wanted, sources, stock, cap=cap, all_or_nothing=all_or_nothing)
    for sku in ("A", "B"):
        taken = [p for p in plan.picks if p.sku == sku]
        assert sum(p.quantity for p in taken) in (0, wanted.get(sku, 0))
        assert sum(p.quantity for p in taken) <= channel_available(sku, sources, stock, cap)
        for pick in taken:
            source = next(s for s in sources if s.location_id == pick.location_id)
            assert pick.quantity <= stock[(sku, pick.location_id)].free(source.safety_stock)
    if all_or_nothing and plan.shortfalls:
        assert plan.picks == ()
