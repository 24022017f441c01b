"""librdkafka's log lines: structured, and a repeating line held back between showings."""

from __future__ import annotations

import logging

from omnistock.platform.kafka import Repeats


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(message: str, facility: str = "FAIL") -> logging.LogRecord:
    # The shape the client library logs in: ("%s [%s] %s", facility, client name, message).
    args = (facility, "rdkafka#1", message)
    return logging.LogRecord("omnistock.kafka", logging.ERROR, "", 0, "%s [%s] %s", args, None)


def refused(after_ms: int) -> logging.LogRecord:
    return record(
        "127.0.0.1:19092/bootstrap: Connect to ipv4#127.0.0.1:19092 failed: "
        f"Connection refused (after {after_ms}ms in state CONNECT)"
    )


def test_a_line_repeating_while_the_broker_is_away_shows_once_per_interval() -> None:
    clock = Clock()
    repeats = Repeats(every_s=30, clock=clock)
    shown = []
    for tick in range(120):  # a minute of a failed connect every half second
        clock.now = tick * 0.5
        line = refused(after_ms=tick % 7)
        if repeats.filter(line):
            shown.append((clock.now, line.held_back))
    assert shown == [(0.0, 0), (30.0, 59)]


def test_different_lines_are_not_held_back_by_each_other() -> None:
    repeats = Repeats(every_s=30, clock=Clock())
    assert repeats.filter(refused(0))
    assert repeats.filter(record("1/1 brokers are down", facility="ERROR"))
    assert repeats.filter(record("Disconnected while requesting ApiVersion", facility="FAIL"))
    assert not repeats.filter(refused(3))
