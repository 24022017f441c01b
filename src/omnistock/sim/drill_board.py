"""What a drill shows while it runs: each fault with its state, the time since it struck and
its results; the requests of the last second per kind; how far the event flow is behind."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from omnistock.sim.flow import Backlog
from omnistock.sim.metrics import Recorder

if TYPE_CHECKING:
    from omnistock.sim.faults import Fault


class Board:
    def __init__(self, console: Console, recorder: Recorder, faults: list[Fault]) -> None:
        self.console = console
        self.recorder = recorder
        self.faults = faults
        self.started = time.monotonic()
        self.text = "starting"
        self.current: tuple[str, float] | None = None
        self.results: dict[str, dict[str, Any]] = {}
        self.latest: Backlog | None = None

    @contextmanager
    def live(self) -> Iterator[None]:
        live = Live(self, console=self.console, refresh_per_second=4, vertical_overflow="visible")
        with live:
            yield

    def phase(self, text: str) -> None:
        self.text = text

    def start(self, fault: str) -> None:
        self.current = (fault, time.monotonic())
        self.text = f"{fault}: injected, waiting for traffic and events to flow again"

    def done(self, fault: str, result: dict[str, Any]) -> None:
        self.current = None
        self.results[fault] = result
        self.console.print(_line(fault, result))

    def backlog(self, backlog: Backlog) -> None:
        self.latest = backlog

    def __rich__(self) -> RenderableType:
        elapsed = time.monotonic() - self.started
        head = Text(f"omnistock drill · {elapsed:5.0f} s · {self.text}", style="bold")
        table = Table(expand=False, padding=(0, 1))
        for column in ("fault", "state", "since", "recovery", "target", "invariants"):
            table.add_column(column)
        for fault in self.faults:
            table.add_row(*self._row(fault))
        return Group(head, table, self._rates(), self._flow())

    def _row(self, fault: Fault) -> list[str]:
        result = self.results.get(fault.name)
        target = f"{fault.target_s:.0f} s"
        if result is None and self.current is not None and self.current[0] == fault.name:
            since = time.monotonic() - self.current[1]
            return [fault.name, "[yellow]recovering", f"{since:.1f} s", "", target, ""]
        if result is None:
            return [fault.name, "[dim]waiting", "", "", target, ""]
        if "skipped" in result:
            return [fault.name, "[dim]skipped", "", "", target, ""]
        recovery = result.get("recovery_s")
        shown = "[red]never" if recovery is None else f"{recovery:.1f} s"
        if recovery is not None and not result.get("within_target"):
            shown = f"[red]{shown}"
        held = "[green]ok" if result.get("invariants_ok") else "[red]violated"
        return [fault.name, "done", "", shown, target, held]

    def _rates(self) -> Text:
        second = int(self.recorder.now()) - 1
        parts = []
        for op in self.recorder.ops():
            figures = self.recorder.summary(op, since=second, until=second + 1)
            if figures["count"]:
                errors = f" ({figures['errors']:.0f} failed)" if figures["errors"] else ""
                parts.append(f"{op} {figures['count']:.0f}/s{errors}")
        return Text("last second: " + (" · ".join(parts) or "—"), style="dim")

    def _flow(self) -> Text:
        if self.latest is None:
            return Text("")
        lag = self.latest.lag
        groups = (
            " · ".join(f"{group_name(g)} {n}" for g, n in lag.items())
            if lag is not None
            else "broker not answering"
        )
        waiting = sum(n for n, _ in self.latest.outbox.values())
        return Text(f"consumer lag: {groups} · outbox waiting: {waiting}", style="dim")


def _line(fault: str, result: dict[str, Any]) -> str:
    if "skipped" in result:
        return f"{fault}: skipped ({result['skipped']})"
    recovery = result.get("recovery_s")
    took = "did not recover" if recovery is None else f"recovered in {recovery:.1f} s"
    held = "invariants hold" if result.get("invariants_ok") else "INVARIANTS VIOLATED"
    return f"{fault}: {took} (target {result['target_s']:.0f} s), {held}"


def group_name(group: str) -> str:
    """A run's consumer group as a person says it: ``orders payments``."""
    setting = group.rsplit(".", 1)[-1]
    return setting.removeprefix("omnistock_").removesuffix("_group").replace("_", " ")
