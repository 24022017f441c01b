"""Deliberate crashes at named points, for crash tests and drills.

``OMNISTOCK_FAULTS="relay.after_publish:kill"`` makes the process SIGKILL itself when it reaches
that point, which is exactly what a ``kill -9`` at the worst moment does; ``:kill@N`` waits until
the point is reached the N-th time. Unset in production: the check is a dict lookup.
"""

from __future__ import annotations

import os
import signal

_counts: dict[str, int] = {}


def _armed() -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in filter(None, os.environ.get("OMNISTOCK_FAULTS", "").split(",")):
        point, _, action = item.partition(":")
        if action.startswith("kill"):
            _, _, nth = action.partition("@")
            armed[point.strip()] = int(nth) if nth else 1
    return armed


_ARMED: dict[str, int] | None = None


def point(name: str) -> None:
    """Crash here if this point is armed."""
    global _ARMED
    if _ARMED is None:
        _ARMED = _armed()  # read on first use: a spawned worker sets its environment late
    if name not in _ARMED:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] >= _ARMED[name]:
        os.kill(os.getpid(), signal.SIGKILL)
