"""The faults a drill injects: every service killed with SIGKILL, the stack's broker and
database killed (``ops/stack.sh``), and the services' links to them slowed, reset or cut
through Toxiproxy; with each, its recovery target and the kinds of traffic it hits."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnistock.sim.fleet import SERVICES

SERVICE_TARGET_S, STACK_TARGET_S, LINK_TARGET_S = 15.0, 60.0, 15.0
WITH_DATABASE = tuple(s for s in SERVICES if s != "storefront")
# The broker carries what the storefront shows and what follows an order's placing.
WITH_EVENTS = ("storefront", "orders")
STACK = Path(__file__).resolve().parents[3] / "ops" / "stack.sh"


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    kind: str  # service | stack | link
    target_s: float
    probes: tuple[str, ...]
    link: str = ""  # postgres | kafka
    toxic: tuple[str, dict[str, Any]] | None = None  # on a link; None: the link is cut
    hold_s: float = 0.0  # how long a link fault lasts

    def probed(self, services: tuple[str, ...]) -> tuple[str, ...]:
        """The probes of the fault that a fleet of ``services`` can answer."""
        return tuple(s for s in self.probes if s in services)

    def patience_s(self) -> float:
        """How long recovery is waited for before the fault counts as not recovered."""
        return max(4 * self.target_s, 60.0)


FAULTS: dict[str, Fault] = {
    **{s: Fault(s, "service", SERVICE_TARGET_S, (s,)) for s in SERVICES},
    "kafka": Fault("kafka", "stack", STACK_TARGET_S, WITH_EVENTS),
    "postgres": Fault("postgres", "stack", STACK_TARGET_S, WITH_DATABASE),
    "pg-latency": Fault(
        "pg-latency",
        "link",
        LINK_TARGET_S,
        WITH_DATABASE,
        "postgres",
        ("latency", {"latency": 200, "jitter": 50}),
        5.0,
    ),
    "pg-reset": Fault(
        "pg-reset", "link", LINK_TARGET_S, WITH_DATABASE, "postgres", ("reset_peer", {}), 3.0
    ),
    "pg-cut": Fault("pg-cut", "link", LINK_TARGET_S, WITH_DATABASE, "postgres", None, 5.0),
    "kafka-latency": Fault(
        "kafka-latency",
        "link",
        LINK_TARGET_S,
        WITH_EVENTS,
        "kafka",
        ("latency", {"latency": 300, "jitter": 50}),
        5.0,
    ),
    "kafka-cut": Fault("kafka-cut", "link", LINK_TARGET_S, WITH_EVENTS, "kafka", None, 5.0),
}


def stack(action: str, component: str) -> None:
    """``ops/stack.sh ACTION COMPONENT``, its output kept for when it fails."""
    done = subprocess.run(["bash", str(STACK), action, component], capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"stack {action} {component}: {done.stderr.decode()[-800:]}")


def chosen_faults(names: list[str] | None) -> tuple[str, ...]:
    """The faults named (in the drill's own order), all of them for none or ``all``."""
    if not names or names == ["all"]:
        return tuple(FAULTS)
    unknown = sorted(set(names) - set(FAULTS))
    if unknown:
        raise ValueError(f"unknown fault(s) {', '.join(unknown)}; known: {', '.join(FAULTS)}")
    return tuple(f for f in FAULTS if f in names)
