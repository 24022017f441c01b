"""customer-sync's projection: the view of an order is the same whatever the order, repeats and
replays of its events."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from omnistock.customer_sync.projection import Fields, changes_of, fold, merge, notices_of
from omnistock.customer_sync.view import order_cards
from tests.customer_sync_story import START, Written, order_story

STORY = order_story("order-1", "pay-1", "cara")


def view_of(written: list[Written]) -> list[dict[str, Any]]:
    """What the service's repository does, in memory: merge every change into its entry."""
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for w in written:
        for change in changes_of(w.payload, w.time):
            key = (change.kind, change.entity_id)
            entries[key] = fold(entries.get(key), change)
    return order_cards([entries[k] for k in sorted(entries)])


IN_ORDER = view_of(STORY)


def test_the_story_in_order_shows_the_order_as_it_ended() -> None:
    (card,) = IN_ORDER
    assert (card["status"], card["version"], card["total"], card["placed_at"]) == (
        "completed",
        12,
        8_000,
        STORY[0].time.isoformat(),
    )
    (payment,) = card["payments"]
    assert (payment["status"], payment["captured"], payment["refunded"], payment["method"]) == (
        "settled",
        3_000,
        1_000,
        "try_before_you_buy",
    )
    assert [(s["shipment_id"], s["status"]) for s in card["shipments"]] == [
        ("parcel-1", "shipped"),
        ("parcel-2", "shipped"),
    ]
    (parcel,) = card["parcels"]
    assert (parcel["status"], parcel["pickup_code"], parcel["point_id"]) == (
        "collected",
        "40418812",
        "locker-waw-1",
    )
    (returned,) = card["returns"]
    assert (returned["status"], returned["version"], returned["kind"]) == ("settled", 14, "trial")


@settings(max_examples=300, deadline=None)
@given(st.permutations(STORY), st.lists(st.sampled_from(STORY), max_size=10))
def test_shuffled_and_repeated_events_end_in_the_same_view(
    shuffled: list[Written], repeats: list[Written]
) -> None:
    assert view_of([*shuffled, *repeats]) == IN_ORDER


def test_an_older_version_never_replaces_a_newer_field_and_a_repeat_changes_nothing() -> None:
    fields: Fields = merge({}, 3, {"status": "authorized"})
    assert merge(fields, 2, {"status": "allocated", "total": 5})["status"] == [3, "authorized"]
    assert merge(fields, 2, {"total": 5})["total"] == [2, 5]  # a field only it carries
    assert merge(fields, 3, {"status": "authorized"}) == fields


def test_notifications_come_from_confirmation_shipment_pickup_trial_and_refund() -> None:
    notices = [n for w in STORY for n in notices_of(w.payload, w.time, timedelta(hours=48))]
    assert sorted((n.kind, n.key) for n in notices) == [
        ("order_confirmed", "order-1"),
        ("order_shipped", "order-1"),
        # From the order and from the locker: one key, so recorded once.
        ("ready_for_pickup", "order-1"),
        ("ready_for_pickup", "order-1"),
        ("refund_made", "pay-1-op-4"),
        ("trial_ending", "order-1"),
    ]
    trial = next(n for n in notices if n.kind == "trial_ending")
    assert trial.due_at == START + timedelta(days=14) - timedelta(hours=48)
