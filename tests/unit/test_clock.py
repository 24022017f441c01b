from datetime import UTC, datetime, timedelta, timezone

import pytest

from omnistock.platform.clock import ManualClock, SystemClock, ensure_utc


def test_system_clock_is_utc() -> None:
    assert SystemClock().now().tzinfo is UTC


def test_manual_clock_moves_only_forward_when_told() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    clock.advance(timedelta(minutes=15))
    assert clock.now() == datetime(2026, 1, 1, 0, 15, tzinfo=UTC)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(timedelta(seconds=-1))


def test_times_are_converted_to_utc_and_naive_ones_refused() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert ensure_utc(datetime(2026, 6, 1, 12, tzinfo=plus_two)) == datetime(
        2026, 6, 1, 10, tzinfo=UTC
    )
    with pytest.raises(ValueError, match="naive"):
        ensure_utc(datetime(2026, 6, 1, 12))
