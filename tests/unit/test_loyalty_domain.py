"""The loyalty programme's rules, pure: points in integers, tiers, holds, the balance that never
goes below zero, earning for kept lines only, reversals and expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnistock.loyalty.domain import (
    HOLD_TRANSITIONS,
    PURCHASE_TRANSITIONS,
    Account,
    Earned,
    Hold,
    HoldStatus,
    InsufficientPoints,
    InvalidTransition,
    Kind,
    Line,
    MarketRule,
    Policy,
    Purchase,
    PurchaseStatus,
    Refused,
    Tier,
    add_months,
    hold_move,
)
from omnistock.loyalty.settings import LoyaltySettings

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
RULE = MarketRule()  # 1 point per 100 minor units; member 100 %, silver 125 %, gold 150 %
EARNED = Earned(kept_value=0, currency="PLN", tier="member", multiplier_percent=100, expires_at=T0)


def account(balance: int = 0) -> Account:
    member = Account("m-1", "c-1", "brand", "pl", "member")
    if balance:
        member.earned = member.balance = balance
    return member


def purchase(*lines: tuple[str, int, int]) -> Purchase:
    return Purchase("o-1", "m-1", "PLN", "pl", [Line(*line) for line in lines])


# -- rules --


def test_points_are_whole_and_round_down_once_after_the_multiplier() -> None:
    assert RULE.base_points(12_345) == 123
    assert RULE.points(12_345, 100) == 123
    # 123.45 * 1.25 = 154.31: one division at the end, not 123 * 1.25 = 153.75 -> 153.
    assert RULE.points(12_345, 125) == 154
    assert RULE.points(99, 150) == 1
    assert RULE.points(0, 150) == 0
    assert isinstance(RULE.points(10**15, 150), int)


def test_a_market_rule_sets_its_own_rate_and_tiers() -> None:
    yen = MarketRule(points_per_unit=1, minor_units_per_unit=1, tiers=(Tier("basic", 0, 100),))
    assert yen.points(1_000, 100) == 1_000
    policy = Policy(rules={"jp": yen})
    assert policy.rule("jp") is yen
    assert policy.rule("pl") == MarketRule()


def test_tiers_are_reached_by_qualifying_points_and_unknown_names_fall_to_the_lowest() -> None:
    assert RULE.tier_for(0).name == "member"
    assert RULE.tier_for(1_999).name == "member"
    assert RULE.tier_for(2_000).name == "silver"
    assert RULE.tier_for(10**9).name == "gold"
    assert RULE.tier_named("gold").multiplier_percent == 150
    assert RULE.tier_named("platinum").name == "member"


@pytest.mark.parametrize(
    "tiers",
    [
        (),
        (Tier("a", 10, 100),),
        (Tier("a", 0, 100), Tier("b", 0, 120)),
        (Tier("a", 0, 100), Tier("a", 5, 120)),
        (Tier("a", 0, -1),),
    ],
)
def test_rules_that_make_no_sense_are_refused(tiers: tuple[Tier, ...]) -> None:
    with pytest.raises(ValueError, match="tier"):
        MarketRule(tiers=tiers)


def test_an_order_belongs_to_the_account_of_its_brand_group_and_market() -> None:
    policy = Policy(brand_groups={"house-a": "house", "house-b": "house"})
    assert policy.membership("c", "house-a-pl").brand_group == "house"
    assert policy.membership("c", "house-b-pl") == policy.membership("c", "house-a-pl")
    assert policy.membership("c", "other-de").brand_group == "other"
    assert policy.membership("c", "other-de").market == "de"
    with pytest.raises(Refused) as refused:
        policy.membership("c", "nomarket")
    assert refused.value.field == "channel_id"


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (datetime(2026, 1, 31, tzinfo=UTC), 1, datetime(2026, 2, 28, tzinfo=UTC)),
        (datetime(2028, 2, 29, tzinfo=UTC), 12, datetime(2029, 2, 28, tzinfo=UTC)),
        (datetime(2026, 3, 1, tzinfo=UTC), -12, datetime(2025, 3, 1, tzinfo=UTC)),
        (datetime(2026, 12, 15, tzinfo=UTC), 1, datetime(2027, 1, 15, tzinfo=UTC)),
    ],
)
def test_months_are_calendar_months(start: datetime, months: int, expected: datetime) -> None:
    assert add_months(start, months) == expected


def test_settings_read_rules_and_groups_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "OMNISTOCK_LOYALTY_RULES_BY_MARKET",
        '{"de": {"points_per_unit": 2, "tiers": [{"name": "basic", "from_points": 0,'
        ' "multiplier_percent": 100}]}}',
    )
    monkeypatch.setenv("OMNISTOCK_LOYALTY_BRAND_GROUPS", '{"a": "g"}')
    monkeypatch.setenv("OMNISTOCK_LOYALTY_RETURN_WINDOW_DAYS", "14")
    policy = LoyaltySettings().policy()
    assert policy.rule("de").points(1_000, 100) == 20
    assert policy.rule("de").lowest.name == "basic"
    assert policy.rule("pl").points(1_000, 100) == 10
    assert policy.membership("c", "a-de").brand_group == "g"
    assert policy.return_window == timedelta(days=14)


def test_settings_refuse_a_rule_without_a_first_tier_at_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "OMNISTOCK_LOYALTY_DEFAULT_RULE",
        '{"tiers": [{"name": "gold", "from_points": 5, "multiplier_percent": 100}]}',
    )
    with pytest.raises(ValueError, match="first tier"):
        LoyaltySettings()


# -- holds and the balance --


def test_a_hold_takes_points_from_the_balance_and_records_a_version() -> None:
    member = account(500)
    member.hold("o-1", 200, T0)
    assert (member.balance, member.held, member.version) == (300, 200, 1)
    (change,) = member.changes
    assert (change.kind, change.points, change.balance_change, change.held_change) == (
        Kind.HOLD,
        200,
        -200,
        200,
    )
    assert (change.version, change.balance, change.held) == (1, 300, 200)
    assert member.invariants_hold()


def test_a_hold_beyond_the_balance_is_refused_and_changes_nothing() -> None:
    member = account(100)
    with pytest.raises(InsufficientPoints) as refused:
        member.hold("o-1", 101, T0)
    assert (refused.value.wanted, refused.value.available) == (101, 100)
    assert (member.balance, member.held, member.version, member.changes) == (100, 0, 0, [])


@pytest.mark.parametrize("points", [0, -5])
def test_a_hold_of_no_points_is_refused_naming_points(points: int) -> None:
    with pytest.raises(Refused) as refused:
        account(100).hold("o-1", points, T0)
    assert refused.value.field == "points"


def test_commit_spends_and_release_gives_back() -> None:
    member = account(500)
    member.hold("o-1", 200, T0)
    member.hold("o-2", 100, T0)
    member.commit("o-1", 200, T0)
    member.release("o-2", 100, T0)
    assert (member.balance, member.held, member.spent, member.version) == (300, 0, 200, 4)
    assert [c.kind for c in member.changes] == [Kind.HOLD, Kind.HOLD, Kind.COMMIT, Kind.RELEASE]
    assert member.invariants_hold()


def test_hold_moves_follow_the_table_and_a_repeat_is_no_move() -> None:
    assert HOLD_TRANSITIONS[HoldStatus.COMMITTED] == frozenset()
    assert hold_move(HoldStatus.HELD, HoldStatus.COMMITTED) is True
    assert hold_move(HoldStatus.COMMITTED, HoldStatus.COMMITTED) is False
    assert hold_move(HoldStatus.RELEASED, HoldStatus.RELEASED) is False
    for current, target in [
        (HoldStatus.COMMITTED, HoldStatus.RELEASED),
        (HoldStatus.RELEASED, HoldStatus.COMMITTED),
        (HoldStatus.COMMITTED, HoldStatus.HELD),
        (HoldStatus.RELEASED, HoldStatus.HELD),
    ]:
        with pytest.raises(InvalidTransition):
            hold_move(current, target)
    hold = Hold("o-1", "m-1", 10)
    assert hold.move(HoldStatus.RELEASED) is True
    with pytest.raises(InvalidTransition):
        hold.move(HoldStatus.COMMITTED)
    assert hold.status is HoldStatus.RELEASED


def test_a_reversal_takes_back_at_most_the_balance() -> None:
    member = account(100)
    member.hold("o-9", 80, T0)
    member.commit("o-9", 80, T0)
    taken = member.reverse("o-1", "r-1", 50, T0)
    assert taken == 20
    assert member.balance == 0
    change = member.changes[-1]
    assert (change.kind, change.points, change.unrecovered, change.return_id) == (
        Kind.REVERSE,
        20,
        30,
        "r-1",
    )
    assert member.invariants_hold()


def test_expiry_takes_what_is_left_of_the_oldest_points_after_spending() -> None:
    member = account()
    member.earned = 150  # 100 earned long ago (now expiring), 50 recently
    member.balance = 150
    member.hold("o-1", 30, T0)
    member.commit("o-1", 30, T0)
    member.hold("o-2", 20, T0)
    # Spent and held points came out of the oldest first: 100 - 30 - 20 are left to expire.
    assert member.expire_due(100, T0) == 50
    assert (member.balance, member.held, member.expired) == (50, 20, 50)
    # Nothing more from the same earnings.
    assert member.expire_due(100, T0) == 0
    # The hold comes back after those points expired: they expire too.
    member.release("o-2", 20, T0)
    assert member.expire_due(100, T0) == 20
    assert member.balance == 50
    assert member.invariants_hold()


def test_a_tier_change_is_a_version_without_points() -> None:
    member = account(10)
    assert member.change_tier("member", 0, T0) is False
    assert member.change_tier("gold", 12_000, T0) is True
    (change,) = member.changes
    assert (change.kind, change.tier, change.previous_tier, change.qualifying_points) == (
        Kind.TIER,
        "gold",
        "member",
        12_000,
    )
    assert (change.points, change.balance, member.version) == (0, 10, 1)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["earn", "hold", "commit", "release", "reverse", "expire"]),
            st.integers(min_value=1, max_value=500),
        ),
        max_size=60,
    )
)
def test_no_sequence_of_moves_makes_the_balance_negative_or_loses_a_point(
    moves: list[tuple[str, int]],
) -> None:
    member = account()
    holds: list[tuple[str, int]] = []
    for number, (move, points) in enumerate(moves):
        try:
            if move == "earn":
                member.earn(f"o-{number}", points, EARNED, T0)
            elif move == "hold":
                member.hold(f"o-{number}", points, T0)
                holds.append((f"o-{number}", points))
            elif move in ("commit", "release") and holds:
                order, held = holds.pop(points % len(holds))
                getattr(member, move)(order, held, T0)
            elif move == "reverse":
                member.reverse("o", "r", points, T0)
            elif move == "expire":
                member.expire_due(points, T0)
        except InsufficientPoints:
            pass
        assert member.invariants_hold()
        assert member.balance >= 0
    # The ledger is the account: its changes add up to the balance and the held points.
    assert [c.version for c in member.changes] == list(range(1, member.version + 1))
    assert sum(c.balance_change for c in member.changes) == member.balance
    assert sum(c.held_change for c in member.changes) == member.held


# -- purchases: what an order earns --


def test_only_kept_lines_earn_and_a_trial_return_counts_once_per_unit() -> None:
    order = purchase(("A", 1, 10_000), ("B", 2, 5_000), ("C", 1, 2_500))
    assert order.kept_value() == 22_500
    assert order.take_back([("B", 2), ("C", 1)]) == 3
    assert order.kept_value() == 10_000
    # More than is left, or a SKU the order does not have, takes nothing more.
    assert order.take_back([("B", 5), ("Z", 1)]) == 0
    assert order.kept_value() == 10_000


def test_an_order_earns_after_its_return_window_at_the_members_tier() -> None:
    order = purchase(("A", 1, 10_000))
    order.complete(T0, timedelta(days=30))
    assert order.status is PurchaseStatus.SCHEDULED
    assert not order.is_due(T0 + timedelta(days=29, hours=23))
    assert order.is_due(T0 + timedelta(days=30))
    now = T0 + timedelta(days=30)
    earning = order.earn(RULE, RULE.tier_named("silver"), now, valid_months=24)
    assert (earning.points, earning.qualifying, earning.kept_value) == (125, 100, 10_000)
    assert earning.expires_at == add_months(now, 24)
    assert order.status is PurchaseStatus.EARNED


def test_goods_returned_after_the_earning_take_back_their_points_at_the_earned_rate() -> None:
    order = purchase(("A", 1, 10_000), ("B", 1, 6_000))
    order.complete(T0, timedelta(days=30))
    order.earn(RULE, RULE.tier_named("gold"), T0 + timedelta(days=30), 24)
    assert order.points == 240
    order.take_back([("B", 1)])
    reversal = order.reversal_due(RULE)
    assert (reversal.points, reversal.qualifying) == (90, 60)
    order.reversed(reversal, taken=50)
    assert (order.points_reversed, order.points_unrecovered, order.net_points) == (50, 40, 190)
    # Nothing more is due for the same return.
    assert order.reversal_due(RULE) == type(reversal)(0, 0)


def test_a_return_before_the_earning_reverses_nothing_it_only_lowers_what_is_kept() -> None:
    order = purchase(("A", 2, 10_000))
    order.complete(T0, timedelta(days=30))
    order.take_back([("A", 1)])
    assert order.reversal_due(RULE).points == 0
    assert order.earn(RULE, RULE.lowest, T0 + timedelta(days=31), 24).points == 100


def test_purchase_moves_follow_the_table() -> None:
    assert PURCHASE_TRANSITIONS[PurchaseStatus.CANCELLED] == frozenset()
    order = purchase(("A", 1, 100))
    order.cancel()
    with pytest.raises(InvalidTransition):
        order.complete(T0, timedelta(days=30))
    done = purchase(("A", 1, 100))
    done.complete(T0, timedelta(days=30))
    with pytest.raises(InvalidTransition):
        done.cancel()
    with pytest.raises(InvalidTransition):
        done.complete(T0, timedelta(days=30))
