"""What the simulator shows while it runs, and the storefront's event lag it watches: the
read model's own figures from its ``/metrics`` (messages behind the compacted topics, seconds
since it last held everything)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from omnistock.sim.client import Api
from omnistock.sim.metrics import Recorder

WINDOW_S = 5  # the live figures cover the last few whole seconds
ROWS = 10
METRICS_SCOPES = ("metrics:read",)


@dataclass
class Lag:
    """The storefront's lag as last read, and the worst seen."""

    messages: float = 0.0
    staleness_s: float = 0.0
    worst_messages: float = 0.0
    worst_staleness_s: float = 0.0
    reads: int = 0

    def update(self, text: str) -> None:
        messages = 0.0
        staleness: float | None = None
        for line in text.splitlines():
            name, _, value = line.rpartition(" ")
            if name.startswith("omnistock_storefront_lag_messages{"):
                messages += _number(value)
            elif name == "omnistock_storefront_staleness_seconds":
                staleness = _number(value)
        self.messages = messages
        self.staleness_s = staleness if staleness is not None else self.staleness_s
        self.worst_messages = max(self.worst_messages, self.messages)
        self.worst_staleness_s = max(self.worst_staleness_s, self.staleness_s)
        self.reads += 1


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


async def read_lag(api: Api, lag: Lag) -> None:
    answer = await api.call(
        "storefront.metrics",
        "storefront",
        "GET",
        "/metrics",
        headers=api.headers("sim-monitor", METRICS_SCOPES),
    )
    if answer.ok and isinstance(answer.body, str):
        lag.update(answer.body)
        api.recorder.gauge("storefront.lag_messages", lag.messages)
        api.recorder.gauge("storefront.staleness_s", lag.staleness_s)


@dataclass
class Board:
    """Everything the live view needs, updated by the run."""

    rate: float
    duration_s: float | None
    phase: str = "starting"
    offered: int = 0
    missed: int = 0  # arrivals due before the end that the simulator was too slow to send
    in_flight: int = 0
    behind_s: float = 0.0
    orders: dict[str, int] = field(default_factory=dict)
    lag: Lag = field(default_factory=Lag)


def render(recorder: Recorder, api: Api, board: Board) -> RenderableType:
    now = recorder.now()
    since = max(0.0, int(now) - WINDOW_S)
    until = int(now)
    span = max(1, until - since)
    table = Table(title=None, expand=False, show_edge=False, pad_edge=False)
    for column in ("operation", "req/s", "p50 ms", "p99 ms", "errors", "total"):
        table.add_column(column, justify="left" if column == "operation" else "right")
    overall = {op: recorder.summary(op) for op in recorder.ops()}
    recent = {op: recorder.summary(op, since, until) for op in overall}
    calls = [op for op in overall if not op.startswith("saga.")]
    total_rate = sum(recent[op]["count"] for op in calls) / span
    # The busiest calls and the saga's times fit a terminal; the summary has every call.
    shown = sorted(calls, key=lambda op: -overall[op]["count"])[:ROWS]
    shown += sorted(op for op in overall if op.startswith("saga."))
    for op in shown:
        rate = recent[op]["count"] / span
        table.add_row(
            op,
            f"{rate:,.1f}",
            f"{recent[op]['p50_ms']:,.1f}",
            f"{recent[op]['p99_ms']:,.1f}",
            f"[red]{overall[op]['errors']:,}[/red]" if overall[op]["errors"] else "0",
            f"{overall[op]['count']:,}",
        )
    length = f"/{board.duration_s:.0f}" if board.duration_s is not None else ""
    head = Text.from_markup(
        f"[bold]omnistock simulate[/bold] · {board.phase} · {now:,.0f}{length} s · "
        f"offered {board.rate:,.0f}/s · answered {total_rate:,.0f}/s · "
        f"in flight {board.in_flight:,} · behind schedule {board.behind_s:.2f} s"
        + (f" · [red]{board.missed:,} not sent[/red]" if board.missed else "")
    )
    orders = " · ".join(f"{k} {v:,}" for k, v in board.orders.items()) or "none yet"
    lag = Text.from_markup(
        f"storefront lag: {board.lag.messages:,.0f} messages, "
        f"{board.lag.staleness_s * 1000:,.0f} ms stale (worst {board.lag.worst_messages:,.0f}, "
        f"{board.lag.worst_staleness_s * 1000:,.0f} ms)"
    )
    refusals = api.kinds(frozenset({"business", "throttled"}))
    errors = api.kinds(frozenset({"client", "server", "timeout", "transport", "sim"}))
    return Group(
        head,
        Text(f"orders: {orders}"),
        lag,
        table,
        Text.from_markup(f"refusals: {_top(refusals)}"),
        Text.from_markup(f"errors: {_top(errors, 'red')}"),
    )


def _top(kinds: dict[str, int], colour: str = "yellow", shown: int = 6) -> str:
    if not kinds:
        return "none"
    parts = [f"[{colour}]{kind}[/{colour}] {n:,}" for kind, n in list(kinds.items())[:shown]]
    return " · ".join(parts)
