"""Rate limits per client, and caps on requests under way."""

from __future__ import annotations

import math
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
    and longer while the work it waits for is no faster.

    ``load()`` is the count under way smoothed over ``smoothing_s``: a rush lifts it within a
    fraction of a second, a moment's bunching of an ordinary load hardly does, and it falls
    back as soon as the rush is over."""

    def __init__(self, limit: int, smoothing_s: float = 0.25) -> None:
        self.limit = limit
        self.under_way = 0
        self._smoothing_s = smoothing_s
        self._load = 0.0
        self._at = time.monotonic()

    def try_enter(self, now: float | None = None) -> bool:
        if self.under_way >= self.limit:
            return False
        self._settle(now)
        self.under_way += 1
        return True

    def leave(self, now: float | None = None) -> None:
        self._settle(now)
        self.under_way -= 1

    def load(self, now: float | None = None) -> float:
        self._settle(now)
        return self._load

    def _settle(self, now: float | None) -> None:
        """Bring ``_load`` up to ``now``: since the last change the count stood still, and the
        load went that way exponentially."""
        now = time.monotonic() if now is None else now
        elapsed, self._at = max(0.0, now - self._at), now
        if self._smoothing_s <= 0:
            self._load = float(self.under_way)
            return
        self._load = self.under_way + (self._load - self.under_way) * math.exp(
            -elapsed / self._smoothing_s
        )
