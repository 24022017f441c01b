"""Collection points, pure: opening hours in local time, positions and distances, the search
box and cursor, and the booking's state machine with the point's slots."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omnistock.collection_points.domain import (
    TRANSITIONS,
    Address,
    Booking,
    Capability,
    Conflict,
    InvalidTransition,
    Kind,
    Move,
    NoFreeSlot,
    OpeningHours,
    Point,
    PointDetails,
    Position,
    Refused,
    Status,
    bounding_box,
    degrees_text,
    distance_m,
    is_open,
    zone,
)
from omnistock.collection_points.domain.search import After, Search

T0 = datetime(2026, 11, 27, 12, tzinfo=UTC)
NINE_TO_FIVE = {day: [("09:00", "17:00")] for day in ("mon", "tue", "wed", "thu", "fri", "sat")}
WARSAW = Position(52_229_676, 21_012_229)
ids = (f"booking-{n}" for n in itertools.count())


def details(**changes: object) -> PointDetails:
    values: dict[str, object] = {
        "market": "PL",
        "kind": Kind.LOCKER,
        "name": "Locker",
        "address": Address("Marszałkowska 1", "00-001", "Warszawa"),
        "position": WARSAW,
        "time_zone": "Europe/Warsaw",
        "hours": OpeningHours.parse(NINE_TO_FIVE),
        "capabilities": frozenset({Capability.PICKUP}),
        "capacity": 2,
        "pickup_days": None,
        "active": True,
    }
    values.update(changes)
    return PointDetails(**values)  # type: ignore[arg-type]


def locker(capacity: int = 2) -> Point:
    return Point.create("locker-1", details(capacity=capacity))


def booked(point: Point | None = None) -> tuple[Point, Booking]:
    point = point or locker()
    return point, Booking.book(point, next(ids), f"order-{next(ids)}", "customer-1", T0)


def arrived(code: str = "12345678") -> tuple[Point, Booking]:
    point, booking = booked()
    booking.arrive(code, T0, timedelta(days=3))
    return point, booking


# -- opening hours --


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_same_utc_instant_is_open_in_warsaw_and_closed_in_lisbon() -> None:
    hours = OpeningHours.parse({day: [("09:00", "17:00")] for day in NINE_TO_FIVE | {"sun": []}})
    warsaw, lisbon = zone("Europe/Warsaw"), zone("Europe/Lisbon")
    # Winter: Warsaw is UTC+1, Lisbon UTC+0.
    assert is_open(hours, warsaw, at("2026-01-14T08:30"))  # 09:30 in Warsaw
    assert not is_open(hours, lisbon, at("2026-01-14T08:30"))  # 08:30 in Lisbon
    assert not is_open(hours, warsaw, at("2026-01-14T16:30"))  # 17:30
    assert is_open(hours, lisbon, at("2026-01-14T16:30"))  # 16:30


def test_hours_follow_the_wall_clock_across_the_spring_change() -> None:
    """Both zones move their clocks on 29 March 2026 at 01:00 UTC: 07:30 UTC is 08:30 in Warsaw
    on the Saturday before (closed) and 09:30 on the Monday after (open)."""
    hours = OpeningHours.parse({day: [("09:00", "17:00")] for day in NINE_TO_FIVE})
    warsaw, lisbon = zone("Europe/Warsaw"), zone("Europe/Lisbon")
    assert not is_open(hours, warsaw, at("2026-03-28T07:30"))
    assert is_open(hours, warsaw, at("2026-03-30T07:30"))
    assert not is_open(hours, lisbon, at("2026-03-28T08:30"))  # 08:30 WET
    assert is_open(hours, lisbon, at("2026-03-30T08:30"))  # 09:30 WEST
    # A fixed offset would get the Monday wrong: 16:30 UTC is 18:30 in Warsaw, closed.
    assert is_open(hours, warsaw, at("2026-03-27T15:30"))
    assert not is_open(hours, warsaw, at("2026-03-30T15:30"))


def test_the_skipped_hour_of_the_spring_night_is_never_open() -> None:
    night = OpeningHours.parse({"sun": [("00:00", "02:30")]})
    warsaw = zone("Europe/Warsaw")
    assert is_open(night, warsaw, at("2026-03-29T00:59"))  # 01:59 CET
    assert not is_open(night, warsaw, at("2026-03-29T01:00"))  # 03:00 CEST: 02:00-03:00 skipped


def test_the_repeated_hour_of_the_autumn_night_is_open_both_times() -> None:
    """On 25 October 2026 at 01:00 UTC Warsaw goes from 03:00 CEST back to 02:00 CET (02:00-03:00
    happens twice) and Lisbon from 02:00 WEST back to 01:00 WET."""
    night = OpeningHours.parse({"sun": [("02:00", "03:00")]})
    warsaw, lisbon = zone("Europe/Warsaw"), zone("Europe/Lisbon")
    assert is_open(night, warsaw, at("2026-10-25T00:30"))  # 02:30 CEST
    assert is_open(night, warsaw, at("2026-10-25T01:30"))  # 02:30 CET, the second time
    assert not is_open(night, warsaw, at("2026-10-25T02:00"))  # 03:00 CET
    assert not is_open(night, lisbon, at("2026-10-25T00:30"))  # 01:30 WEST
    assert not is_open(night, lisbon, at("2026-10-25T01:30"))  # 01:30 WET
    assert is_open(night, lisbon, at("2026-10-25T02:30"))  # 02:30 WET


def test_an_exception_replaces_the_hours_of_its_local_date() -> None:
    hours = OpeningHours.parse(
        {day: [("00:00", "24:00")] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        [(date(2026, 12, 24), [("08:00", "13:00")]), (date(2026, 12, 25), [])],
    )
    warsaw, lisbon = zone("Europe/Warsaw"), zone("Europe/Lisbon")
    # 23:30 UTC on the 24th is already the 25th in Warsaw (closed) but still the 24th in Lisbon.
    assert not is_open(hours, warsaw, at("2026-12-24T23:30"))
    assert not is_open(hours, lisbon, at("2026-12-24T23:30"))  # 23:30 on the 24th: after 13:00
    assert is_open(hours, lisbon, at("2026-12-24T12:59"))
    # 23:30 UTC on the 23rd: the 24th in Warsaw (its exception, closed till 08:00), still the
    # 23rd in Lisbon (the week's hours, open all day).
    assert not is_open(hours, warsaw, at("2026-12-23T23:30"))
    assert is_open(hours, lisbon, at("2026-12-23T23:30"))
    assert is_open(hours, lisbon, at("2026-12-26T00:00"))


def test_intervals_close_at_their_end_and_24_00_reaches_midnight() -> None:
    hours = OpeningHours.parse({"fri": [("22:00", "24:00")], "sat": [("00:00", "02:00")]})
    utc = zone("UTC")
    assert is_open(hours, utc, datetime(2026, 11, 27, 23, 59, 59, tzinfo=UTC))
    assert is_open(hours, utc, datetime(2026, 11, 28, 0, 0, tzinfo=UTC))
    assert is_open(hours, utc, datetime(2026, 11, 28, 1, 59, 59, tzinfo=UTC))
    assert not is_open(hours, utc, datetime(2026, 11, 28, 2, 0, tzinfo=UTC))
    assert not is_open(hours, utc, datetime(2026, 11, 27, 21, 59, 59, tzinfo=UTC))


def test_hours_round_trip_through_their_json() -> None:
    hours = OpeningHours.parse(
        {"mon": [("13:00", "17:00"), ("08:00", "12:00")]}, [(date(2026, 5, 1), [])]
    )
    again = OpeningHours.from_json(hours.as_json())
    assert again == hours
    assert hours.as_json()["weekly"]["mon"][0] == {"opens": "08:00", "closes": "12:00"}
    assert hours.as_json()["weekly"]["sun"] == []


@pytest.mark.parametrize(
    ("weekly", "exceptions", "field"),
    [
        ({"mon": [("17:00", "09:00")]}, [], "opening_hours.weekly.mon[0].closes"),
        ({"mon": [("09:00", "09:00")]}, [], "opening_hours.weekly.mon[0].closes"),
        ({"tue": [("09:00", "13:00"), ("12:00", "18:00")]}, [], "opening_hours.weekly.tue[1]"),
        ({"wed": [("9:00", "17:00")]}, [], "opening_hours.weekly.wed[0].opens"),
        ({"thu": [("24:00", "24:00")]}, [], "opening_hours.weekly.thu[0].opens"),
        ({"monday": [("09:00", "17:00")]}, [], "opening_hours.weekly.monday"),
        (
            {},
            [(date(2026, 1, 1), []), (date(2026, 1, 1), [("10:00", "12:00")])],
            "opening_hours.exceptions[1].date",
        ),
        (
            {},
            [(date(2026, 1, 1), [("10:00", "25:00")])],
            "opening_hours.exceptions[0].hours[0].closes",
        ),
    ],
)
def test_bad_hours_are_refused_naming_the_field(
    weekly: dict[str, list[tuple[str, str]]],
    exceptions: list[tuple[date, list[tuple[str, str]]]],
    field: str,
) -> None:
    with pytest.raises(Refused) as refused:
        OpeningHours.parse(weekly, exceptions)
    assert refused.value.field == field


@pytest.mark.parametrize("name", ["Europe/Atlantis", "CET+1", "localtime", "", "../etc/passwd"])
def test_a_time_zone_is_an_iana_place(name: str) -> None:
    with pytest.raises(Refused) as refused:
        details(time_zone=name).check()
    assert refused.value.field == "time_zone"


def test_a_naive_instant_is_an_error_never_a_guess() -> None:
    with pytest.raises(ValueError, match="naive"):
        is_open(OpeningHours.parse(NINE_TO_FIVE), zone("UTC"), datetime(2026, 1, 1, 10))


# -- positions and distances --


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("52.229676", 52_229_676),
        ("21.0122", 21_012_200),
        ("-0.000001", -1),
        ("0", 0),
        ("-90", -90_000_000),
        ("1E+1", 10_000_000),
    ],
)
def test_degrees_are_whole_micro_degrees_both_ways(text: str, micro: int) -> None:
    position = Position.from_degrees(Decimal(text), Decimal(text))
    assert position.latitude_e6 == position.longitude_e6 == micro
    assert Decimal(position.latitude) == Decimal(text)


def test_degrees_print_with_six_places_exactly() -> None:
    assert degrees_text(52_229_676) == "52.229676"
    assert degrees_text(-1) == "-0.000001"
    assert degrees_text(0) == "0.000000"
    assert degrees_text(-180_000_000) == "-180.000000"


def test_more_than_six_places_or_out_of_range_is_refused_naming_the_field() -> None:
    with pytest.raises(Refused) as refused:
        Position.from_degrees(Decimal("52.2296761"), Decimal("21"))
    assert refused.value.field == "position.latitude"
    with pytest.raises(Refused) as refused:
        Position.from_degrees(Decimal("52"), Decimal("180.000001"))
    assert refused.value.field == "position.longitude"
    with pytest.raises(Refused):
        Position.from_degrees(Decimal("NaN"), Decimal("0"))


def test_distances_match_known_ones() -> None:
    krakow = Position(50_064_650, 19_944_980)
    assert distance_m(WARSAW, krakow) == pytest.approx(252_000, rel=0.01)
    lisbon = Position(38_722_252, -9_139_337)
    assert distance_m(WARSAW, lisbon) == pytest.approx(2_760_000, rel=0.01)
    assert distance_m(WARSAW, WARSAW) == 0
    # A micro-degree of latitude is about 0.11 m.
    assert distance_m(WARSAW, Position(WARSAW.latitude_e6 + 1, WARSAW.longitude_e6)) == (
        pytest.approx(0.111, abs=0.001)
    )


latitudes = st.integers(-89_000_000, 89_000_000)
longitudes = st.integers(-180_000_000, 180_000_000)


@settings(max_examples=400, deadline=None)
@given(
    center_lat=latitudes,
    center_lon=longitudes,
    radius=st.integers(1, 200_000),
    bearing=st.floats(0, 2 * math.pi),
    share=st.floats(0, 1),
)
def test_every_point_within_the_radius_is_inside_the_search_box(
    center_lat: int, center_lon: int, radius: int, bearing: float, share: float
) -> None:
    center = Position(center_lat, center_lon)
    # A point at share * radius in the bearing's direction (the spherical destination formula).
    angle = share * radius / 6_371_008.8
    lat1, lon1 = math.radians(center_lat / 1e6), math.radians(center_lon / 1e6)
    lat2 = math.asin(
        math.sin(lat1) * math.cos(angle) + math.cos(lat1) * math.sin(angle) * math.cos(bearing)
    )
    lon2 = lon1 + math.atan2(
        math.sin(bearing) * math.sin(angle) * math.cos(lat1),
        math.cos(angle) - math.sin(lat1) * math.sin(lat2),
    )
    lon_degrees = (math.degrees(lon2) + 540) % 360 - 180
    target = Position(round(math.degrees(lat2) * 1e6), round(lon_degrees * 1e6))
    if distance_m(center, target) <= radius:
        assert bounding_box(center, radius).contains(target)


def test_a_box_across_the_antimeridian_wraps() -> None:
    fiji = Position(-17_713_371, 179_950_000)
    box = bounding_box(fiji, 20_000)
    assert box.wraps
    assert box.contains(Position(-17_713_371, -179_950_000))
    assert not box.contains(Position(-17_713_371, 0))


# -- search --


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    near = After(1234, "locker-7")
    assert After.from_cursor(near.cursor(), near=True) == near
    by_id = After(None, "store-1")
    assert After.from_cursor(by_id.cursor(), near=False) == by_id
    for bad, is_near in [
        (near.cursor(), False),
        (by_id.cursor(), True),
        ("%%%", True),
        ("", False),
    ]:
        with pytest.raises(Refused) as refused:
            After.from_cursor(bad, near=is_near)
        assert refused.value.field == "query.cursor"


def test_search_limits_name_their_query_field() -> None:
    with pytest.raises(Refused) as refused:
        Search("PL", WARSAW, radius_m=50_001)
    assert refused.value.field == "query.radius_m"
    with pytest.raises(Refused) as refused:
        Search("PL", limit=0)
    assert refused.value.field == "query.limit"


# -- points --


def test_a_locker_needs_slots_and_a_store_may_have_no_limit() -> None:
    with pytest.raises(Refused) as refused:
        Point.create("l", details(capacity=None))
    assert refused.value.field == "capacity"
    store = Point.create("s", details(kind=Kind.STORE, capacity=None))
    for _ in range(50):
        Booking.book(store, next(ids), next(ids), "c", T0)
    assert store.free is None
    assert store.occupied == 50


def test_capacity_cannot_go_below_the_slots_taken_and_a_repeat_is_no_new_version() -> None:
    point, _ = booked(locker(capacity=2))
    Booking.book(point, next(ids), next(ids), "c", T0)
    with pytest.raises(Conflict) as conflict:
        point.update(details(capacity=1))
    assert conflict.value.field == "capacity"
    assert point.details.capacity == 2
    assert point.update(details(capacity=2)) is False
    assert point.version == 1
    assert point.update(details(capacity=3, name="Bigger locker")) is True
    assert point.version == 2


def test_an_inactive_point_takes_no_booking() -> None:
    point = Point.create("l", details(active=False))
    with pytest.raises(Conflict) as conflict:
        Booking.book(point, "b", "o", "c", T0)
    assert conflict.value.field == "point_id"
    assert point.occupied == 0


# -- bookings --


def test_the_table_covers_every_status_and_ended_bookings_allow_nothing() -> None:
    assert set(TRANSITIONS) == set(Status)
    for status in (Status.COLLECTED, Status.EXPIRED, Status.RELEASED):
        assert TRANSITIONS[status] == {}


@pytest.mark.parametrize(("status", "move"), list(itertools.product(Status, Move)))
def test_every_move_not_in_the_table_raises_every_time(status: Status, move: Move) -> None:
    point, booking = booked()
    if status is not Status.BOOKED:
        booking.arrive("12345678", T0, timedelta(days=1))
    later = T0 + timedelta(days=2)
    if status is Status.COLLECTED:
        booking.collect(point, "12345678", later)
    elif status is Status.EXPIRED:
        booking.expire(point, later)
    elif status is Status.RELEASED:
        point, booking = booked()
        booking.release(point, later)
    assert booking.status is status
    allowed = move in TRANSITIONS[status]
    action = {
        Move.ARRIVE: lambda: booking.arrive("87654321", later, timedelta(days=1)),
        Move.COLLECT: lambda: booking.collect(point, booking.pickup_code or "12345678", later),
        Move.EXPIRE: lambda: booking.expire(point, later + timedelta(days=1)),
        Move.RELEASE: lambda: booking.release(point, later),
    }[move]
    if allowed:
        action()
        assert booking.status is TRANSITIONS[status][move]
    else:
        for _ in range(2):
            with pytest.raises(InvalidTransition):
                action()
        assert booking.status is status


def test_no_booking_beyond_the_capacity() -> None:
    point = locker(capacity=2)
    booked(point)
    booked(point)
    with pytest.raises(NoFreeSlot) as refused:
        booked(point)
    assert (refused.value.point_id, refused.value.capacity, refused.value.occupied) == (
        "locker-1",
        2,
        2,
    )
    assert point.occupied == 2
    assert point.slots_version == 2


def test_a_parcel_waits_its_days_then_expires_and_frees_its_slot() -> None:
    point = Point.create("l", details(pickup_days=3))
    _, booking = booked(point)
    booking.arrive("12345678", T0, point.pickup_window(default_days=7))
    assert booking.collect_by == T0 + timedelta(days=3)
    almost = T0 + timedelta(days=3) - timedelta(seconds=1)
    assert not booking.is_due_to_expire(almost)
    with pytest.raises(InvalidTransition):
        booking.expire(point, almost)
    assert point.occupied == 1
    booking.expire(point, T0 + timedelta(days=3))
    assert booking.status is Status.EXPIRED
    assert point.occupied == 0
    assert booking.pickup_code is None
    assert [c.status for c in booking.changes] == [Status.BOOKED, Status.ARRIVED, Status.EXPIRED]
    assert [c.version for c in booking.changes] == [1, 2, 3]
    freed = booking.changes[-1].slots
    assert freed is not None
    assert (freed.version, freed.occupied, freed.free) == (2, 0, 2)
    assert Point.create("d", details()).pickup_window(default_days=7) == timedelta(days=7)


def test_a_wrong_pickup_code_changes_nothing() -> None:
    point, booking = arrived("12345678")
    with pytest.raises(Refused) as refused:
        booking.collect(point, "12345679", T0)
    assert refused.value.field == "pickup_code"
    assert booking.status is Status.ARRIVED
    assert point.occupied == 1
    booking.collect(point, "12345678", T0)
    assert booking.status is Status.COLLECTED
    assert point.occupied == 0
    assert booking.changes[1].pickup_code == "12345678"


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 5),
    steps=st.lists(st.tuples(st.sampled_from([*Move, "book"]), st.integers(0, 9)), max_size=60),
)
def test_slots_taken_always_equal_the_bookings_holding_one(
    capacity: int, steps: list[tuple[str, int]]
) -> None:
    point = locker(capacity)
    bookings: list[Booking] = []
    now = T0
    for action, pick in steps:
        now += timedelta(days=1)
        try:
            if action == "book":
                bookings.append(Booking.book(point, next(ids), next(ids), "c", now))
                continue
            if not bookings:
                continue
            booking = bookings[pick % len(bookings)]
            if action is Move.ARRIVE:
                booking.arrive("12345678", now, timedelta(hours=12))
            elif action is Move.COLLECT:
                booking.collect(point, "12345678", now)
            elif action is Move.EXPIRE:
                booking.expire(point, now)
            else:
                booking.release(point, now)
        except (InvalidTransition, NoFreeSlot):
            pass
        live = sum(1 for b in bookings if b.holds_slot)
        assert 0 <= point.occupied <= capacity
        assert point.occupied == live
