from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from omnistock.contracts.demo import PingSent
from omnistock.platform import events

WHEN = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)


def ping(sequence: int = 1, message: str = "hi") -> PingSent:
    return PingSent(ping_id="p-1", stream="web", sequence=sequence, message=message, sent_at_ns=5)


def test_round_trip_keeps_envelope_and_payload() -> None:
    event_id, raw = events.encode(
        ping(),
        source="/omnistock/demo",
        subject="web",
        time=WHEN,
        aggregate_version=3,
        correlation_id="order-9",
    )
    decoded = events.decode(raw)
    assert decoded is not None
    assert decoded.id == event_id
    assert decoded.type == "omnistock.demo.ping-sent.v1"
    assert decoded.subject == "web"
    assert decoded.aggregate_version == 3
    assert decoded.correlation_id == "order-9"
    assert decoded.time == WHEN
    assert decoded.data == ping()


def test_envelope_is_cloudevents_1_0_structured_json() -> None:
    _, raw = events.encode(
        ping(), source="/omnistock/demo", subject="web", time=WHEN, aggregate_version=1
    )
    body = orjson.loads(raw)
    assert body["specversion"] == "1.0"
    assert body["datacontenttype"] == "application/json"
    assert body["time"] == "2026-11-29T10:00:00Z"
    assert body["correlationid"] == body["id"]  # an event with no cause correlates with itself
    assert set(body) >= {"id", "source", "type", "subject", "time", "data", "aggregateversion"}


def test_times_are_stored_in_utc() -> None:
    warsaw = timezone(timedelta(hours=1))
    _, raw = events.encode(
        ping(), source="/s", subject="web", time=WHEN.astimezone(warsaw), aggregate_version=1
    )
    assert orjson.loads(raw)["time"] == "2026-11-29T10:00:00Z"


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        events.encode(
            ping(), source="/s", subject="web", time=datetime(2026, 1, 1), aggregate_version=1
        )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid CloudEvents envelope"),
        (b'{"specversion": "1.0"}', "invalid CloudEvents envelope"),
        (None, "tombstone"),
    ],
)
def test_malformed_envelopes_name_the_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(events.InvalidEvent, match=reason):
        events.decode(raw)


def test_payload_is_checked_against_its_schema() -> None:
    _, raw = events.encode(ping(), source="/s", subject="web", time=WHEN, aggregate_version=1)
    broken = raw.replace(b'"sequence":1', b'"sequence":"1"')
    with pytest.raises(events.InvalidEvent, match=r"payload does not match its schema.*sequence"):
        events.decode(broken)


def test_unknown_types_are_refused_or_skipped_when_not_accepted() -> None:
    _, raw = events.encode(ping(), source="/s", subject="web", time=WHEN, aggregate_version=1)
    unknown = raw.replace(b"ping-sent", b"pong-sent")
    with pytest.raises(events.UnknownEventType):
        events.decode(unknown)
    assert events.decode(unknown, accept=frozenset({"omnistock.other.v1"})) is None


def test_a_type_string_is_registered_once() -> None:
    from dataclasses import dataclass
    from typing import ClassVar

    with pytest.raises(ValueError, match="registered twice"):

        @events.event_type
        @dataclass(frozen=True)
        class Impostor:
            TYPE: ClassVar[str] = PingSent.TYPE
            TOPIC: ClassVar[str] = "x"


@given(
    sequence=st.integers(min_value=1, max_value=2**62),
    message=st.text(max_size=200),
    version=st.integers(min_value=0, max_value=2**62),
)
def test_any_payload_round_trips(sequence: int, message: str, version: int) -> None:
    _, raw = events.encode(
        ping(sequence, message), source="/s", subject="web", time=WHEN, aggregate_version=version
    )
    decoded = events.decode(raw)
    assert decoded is not None
    assert decoded.data == ping(sequence, message)
    assert decoded.aggregate_version == version


def test_event_ids_are_unique_version_7_uuids_in_time_order() -> None:
    import uuid

    batch = events.new_event_ids(10_000)
    assert len(set(batch)) == 10_000
    parsed = [uuid.UUID(i) for i in batch]
    assert {u.version for u in parsed} == {7}
    assert {u.variant for u in parsed} == {uuid.RFC_4122}
    later = uuid.UUID(events.new_event_id())
    assert later.int >> 80 >= parsed[0].int >> 80  # the millisecond prefix never goes back
