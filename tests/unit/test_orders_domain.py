"""The order's rules without I/O: its transition table, the price check, retries, and the
saga's step list."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnistock.orders import saga
from omnistock.orders.domain import (
    CANCELLABLE,
    FINAL,
    TRANSITIONS,
    InvalidTransition,
    OrderStatus,
    RetryPolicy,
    price_differences,
    transition,
)

statuses = st.sampled_from(list(OrderStatus))


@given(statuses, statuses)
def test_a_move_is_allowed_exactly_when_the_table_lists_it(
    current: OrderStatus, target: OrderStatus
) -> None:
    if target in TRANSITIONS[current]:
        assert transition(current, target) is target
    else:
        with pytest.raises(InvalidTransition):
            transition(current, target)


@given(st.lists(statuses, max_size=30))
def test_any_walk_through_the_table_ends_in_cancelled_or_completed_or_can_go_on(
    choices: list[OrderStatus],
) -> None:
    status = OrderStatus.PLACED
    for choice in choices:
        allowed = sorted(TRANSITIONS[status])
        if not allowed:
            break
        status = transition(status, allowed[list(OrderStatus).index(choice) % len(allowed)])
    assert status in FINAL or TRANSITIONS[status]


def test_every_status_is_in_the_table_and_reachable_from_placed() -> None:
    assert set(TRANSITIONS) == set(OrderStatus)
    reached, frontier = {OrderStatus.PLACED}, [OrderStatus.PLACED]
    while frontier:
        for target in TRANSITIONS[frontier.pop()]:
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    assert reached == set(OrderStatus)
    assert {OrderStatus.COMPLETED, OrderStatus.CANCELLED} == FINAL


def test_only_orders_not_yet_shipped_can_be_cancelled_and_cancelling_only_ends_cancelled() -> None:
    before_shipment = {
        OrderStatus.PLACED,
        OrderStatus.ALLOCATED,
        OrderStatus.AUTHORIZED,
        OrderStatus.CONFIRMED,
    }
    assert before_shipment == CANCELLABLE
    assert TRANSITIONS[OrderStatus.CANCELLING] == {OrderStatus.CANCELLED}
    with pytest.raises(InvalidTransition):
        transition(OrderStatus.SHIPPED, OrderStatus.CANCELLING)


def test_the_saga_walks_the_table_from_placed_to_confirmed() -> None:
    status = OrderStatus.PLACED
    for step in saga.STEPS:
        if step.reaches is not None:  # a step with no status of its own moves on silently
            status = transition(status, step.reaches)
    assert transition(status, OrderStatus.CONFIRMED) is OrderStatus.CONFIRMED


def test_compensation_runs_from_the_step_under_way_back_to_the_first() -> None:
    names = [step.name for step in saga.STEPS]
    assert saga.compensation_from(names[0]) == saga.UNDO + names[0]
    assert saga.compensation_from(names[-1]) == saga.UNDO + names[-1]
    assert saga.compensation_from(None) == saga.UNDO + names[-1]  # confirmed: undo all
    undone, step = [], saga.compensation_from(None)
    while step is not None:
        index, found, compensating = saga.step_named(step)
        assert compensating
        undone.append(found.name)
        step = saga.next_compensation(index)
    assert undone == list(reversed(names))


@given(
    st.integers(min_value=1, max_value=10**9),
    st.integers(min_value=1, max_value=10**9),
    st.integers(min_value=0, max_value=10_000),
)
def test_a_price_passes_when_within_the_tolerance_of_the_current_one(
    seen: int, current: int, tolerance_bp: int
) -> None:
    found = price_differences([("sku-1", seen)], {"sku-1": current}, tolerance_bp)
    within = abs(seen - current) * 10_000 <= current * tolerance_bp
    assert (found == []) is within
    if found:
        assert (found[0].line, found[0].seen, found[0].current) == (0, seen, current)


def test_price_check_names_changed_and_unpriced_lines() -> None:
    found = price_differences(
        [("a", 1000), ("b", 1000), ("c", 1000)], {"a": 1000, "b": 1011, "c": None}, 100
    )
    assert [(d.line, d.sku, d.current) for d in found] == [(1, "b", 1011), (2, "c", None)]
    assert price_differences([("a", 1000)], {"a": 1010}, 100) == []  # 1 %: within


@given(st.integers(min_value=1, max_value=200))
def test_retry_delays_double_up_to_the_cap(attempts: int) -> None:
    policy = RetryPolicy(5, timedelta(seconds=1), timedelta(seconds=60))
    delay = policy.delay(attempts)
    assert timedelta(seconds=1) <= delay <= timedelta(seconds=60)
    assert policy.delay(attempts + 1) >= delay
    assert policy.gives_up(attempts) is (attempts >= 5)
