"""The CPU the processes of an orders run use: per order of a phase, and idle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from omnistock.bench.orders.client import LoadClient
from omnistock.bench.orders.load import Body, Outcomes, Tally, open_loop
from omnistock.bench.orders.stack import Stack

# The processes' idle use is the quietest of a few windows this long; a latency phase waits
# (at most QUIET_WITHIN_S) until they are about that quiet again, so that it shares the machine
# with no work left from the phases before (the PSP's webhooks, the relays' last events).
IDLE_WINDOW_S, IDLE_WINDOWS, QUIET_WITHIN_S = 1.0, 3, 60.0
QUIET_MARGIN_MS_PER_S = 50.0
LOAD = "load"  # this process, in ``Stack.cpu_ms``


async def window(stack: Stack) -> dict[str, float]:
    """CPU ms per second each process used over the next ``IDLE_WINDOW_S``."""
    before, started_at = stack.cpu_ms(), time.monotonic()
    await asyncio.sleep(IDLE_WINDOW_S)
    elapsed = time.monotonic() - started_at
    return {name: ms / elapsed for name, ms in used_between(before, stack.cpu_ms()).items()}


async def idle_cpu_ms_per_s(stack: Stack) -> dict[str, float]:
    """What each process uses with no orders coming: polls and heartbeats."""
    windows = [await window(stack) for _ in range(IDLE_WINDOWS)]
    return min(windows, key=lambda window: sum(window.values()))


async def quiet(stack: Stack, idle: dict[str, float]) -> None:
    """Until the processes use about what they use idle, or ``QUIET_WITHIN_S``."""
    deadline = time.monotonic() + QUIET_WITHIN_S
    while time.monotonic() < deadline:
        if sum((await window(stack)).values()) <= sum(idle.values()) + QUIET_MARGIN_MS_PER_S:
            return


def used_between(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU ms each process used between two readings of ``Stack.cpu_ms``."""
    return {name: after[name] - before[name] for name in after if name in before}


def per_order(before: dict[str, float], after: dict[str, float], orders: int) -> dict[str, float]:
    return {name: round(ms / max(1, orders), 2) for name, ms in used_between(before, after).items()}


def deployment_ms(used: dict[str, float]) -> float:
    """The services', PostgreSQL's and Kafka's share of ``used``: the load generator is no
    part of a deployment."""
    return round(sum(ms for name, ms in used.items() if name != LOAD), 2)


class Meter:
    """The CPU a phase's orders cost each process, less what the processes use idle
    (polls, heartbeats) over the phase: started when the phase starts, read when it ends."""

    def __init__(self, stack: Stack, idle: dict[str, float]) -> None:
        self.stack, self.idle = stack, idle
        self.before, self.started_at = stack.cpu_ms(), time.monotonic()

    def per_order(self, orders: int) -> dict[str, float]:
        elapsed = time.monotonic() - self.started_at
        after = {
            name: ms - self.idle.get(name, 0.0) * elapsed
            for name, ms in self.stack.cpu_ms().items()
        }
        return per_order(self.before, after, orders)


async def costed_open_loop(
    stack: Stack,
    client: LoadClient,
    make_body: Callable[[], Body],
    rate: float,
    seconds: float,
    outcomes: Outcomes,
    idle: dict[str, float],
    settle_s: float,
) -> tuple[Tally, dict[str, float]]:
    """``open_loop`` on a quiet machine, until its orders are settled and the work they left
    (the PSP's webhooks, the last events) is done: its tally and CPU ms per order placed."""
    await quiet(stack, idle)
    meter = Meter(stack, idle)
    tally = await open_loop(client, make_body, rate, seconds, outcomes, f"{rate:g}/s")
    await outcomes.settle(settle_s, "saga catching up")
    await quiet(stack, idle)
    return tally, meter.per_order(len(tally.placed))
