"""Rate limits per client, and caps on requests under way."""

from __future__ import annotations

import time


class RateLimiter:
    """A token bucket per client: flash-sale bots get 429 instead of the whole stock."""

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._rate, self._burst = rate_per_s, burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(client, (float(self._burst), now))
        tokens = min(float(self._burst), tokens + (now - last) * self._rate)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            return False
        self._buckets[client] = (tokens - 1, now)
        return True


class ConcurrencyLimit:
    """At most ``limit`` requests of a kind under way: one more is turned away at once (to
    come back later) rather than queued behind them, where every request would wait longer
    and longer while the work it waits for is no faster."""

    SMOOTHING = 0.05
    """Each entry or exit moves ``load`` this share of the way to the count under way."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.under_way = 0
        # How many are under way, smoothed over the last few dozen entries and exits: a rush
        # lifts it, a moment's bunching of an ordinary load hardly does.
        self.load = 0.0

    def try_enter(self) -> bool:
        if self.under_way >= self.limit:
            return False
        self.under_way += 1
        self.load += self.SMOOTHING * (self.under_way - self.load)
        return True

    def leave(self) -> None:
        self.under_way -= 1
        self.load += self.SMOOTHING * (self.under_way - self.load)
