"""The report of a run: one HTML page and its figures as PNG, from the JSON results the
simulator, the cancellation experiment and the fault drills leave in a folder. Each part is
drawn when its results are there, so a report can be made of any subset."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

SIMULATE, EXPERIMENT, DRILLS = "simulate.json", "experiment.json", "drills.json"
TOP_OPS = 8
COLOURS = ("#1b6ca8", "#e07a1f", "#3a9d5d", "#c0392b", "#7d5ba6", "#8c6d31", "#d35fb7", "#555")


@dataclass
class Page:
    """What the HTML page shows, in order: headed sections of text, tables and figures."""

    title: str
    sections: list[str] = field(default_factory=list)

    def section(self, heading: str, *parts: str) -> None:
        self.sections.append(f"<section><h2>{html.escape(heading)}</h2>{''.join(parts)}</section>")

    def render(self) -> str:
        made = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<title>{html.escape(self.title)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{html.escape(self.title)}</h1><p class=meta>made {made}</p>"
            + "".join(self.sections)
            + "</body></html>"
        )


STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1em 0}td,th{padding:.3em .8em;border-bottom:1px solid #eee;
text-align:right}th:first-child,td:first-child{text-align:left}img{max-width:100%}
.ok{color:#2e7d32;font-weight:600}.bad{color:#c62828;font-weight:600}.meta{color:#777}
"""


def table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if value is True:
        return "<span class=ok>yes</span>"
    if value is False:
        return "<span class=bad>no</span>"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _save(figure: Figure, folder: Path, name: str) -> str:
    path = folder / name
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f'<img src="{html.escape(name)}" alt="{html.escape(name)}">'


def _marks(axes: Any, marks: list[dict[str, Any]]) -> None:
    for mark in marks:
        axes.axvline(mark["t"], color="#999", linestyle=":", linewidth=1)
        axes.annotate(
            mark["label"],
            (mark["t"], 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
            ha="right",
            color="#666",
        )


def traffic_figures(recorded: dict[str, Any], folder: Path, prefix: str) -> list[str]:
    """Throughput and p99 latency per operation over time, with the run's marks."""
    every = recorded.get("ops", {})
    if not every:
        return []
    # The busiest operations, so the lines stay readable; the tables list every one.
    busiest = sorted(every, key=lambda op: -sum(p["count"] for p in every[op]))[:TOP_OPS]
    ops = {op: every[op] for op in busiest}
    images = []
    for metric, label, name in (
        ("count", "requests per second", f"{prefix}-throughput.png"),
        ("p99_ms", "p99 latency (ms)", f"{prefix}-p99.png"),
    ):
        figure, axes = plt.subplots(figsize=(10, 4))
        for colour, (op, points) in zip(COLOURS * 4, sorted(ops.items()), strict=False):
            axes.plot(
                [p["t"] for p in points],
                [p[metric] for p in points],
                label=op,
                color=colour,
                linewidth=1.2,
            )
        _marks(axes, recorded.get("marks", []))
        axes.set_xlabel("seconds into the run")
        axes.set_ylabel(label)
        if metric == "p99_ms":
            axes.set_yscale("log")
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        axes.grid(alpha=0.3)
        images.append(_save(figure, folder, name))
    gauges = recorded.get("gauges", {})
    if gauges:
        figure, axes = plt.subplots(figsize=(10, 3.2))
        for colour, (gauge, points) in zip(COLOURS * 4, sorted(gauges.items()), strict=False):
            axes.plot(
                [p["t"] for p in points], [p["value"] for p in points], label=gauge, color=colour
            )
        _marks(axes, recorded.get("marks", []))
        axes.set_xlabel("seconds into the run")
        axes.set_ylabel("events behind")
        axes.legend(fontsize=7)
        axes.grid(alpha=0.3)
        images.append(_save(figure, folder, f"{prefix}-lag.png"))
    return images


def recovery_figure(faults: list[dict[str, Any]], folder: Path) -> str:
    names = [f["fault"] for f in faults]
    # A fault never recovered from gets a hatched bar as long as the slowest target plus half,
    # labelled: an empty row would read as "recovered at once".
    never = max((f.get("target_s") or 0.0 for f in faults), default=15.0) * 1.5
    seconds = [f["recovery_s"] if f.get("recovery_s") is not None else never for f in faults]
    colours = [
        "#999" if "skipped" in f else "#3a9d5d" if f.get("invariants_ok") else "#c0392b"
        for f in faults
    ]
    figure, axes = plt.subplots(figsize=(10, 0.45 * len(faults) + 1.2))
    bars = axes.barh(names, seconds, color=colours)
    for y, fault in enumerate(faults):
        if fault.get("target_s"):
            axes.plot([fault["target_s"]] * 2, [y - 0.4, y + 0.4], color="#333", linewidth=2)
        if fault.get("recovery_s") is None:
            bars[y].set_hatch("//")
            bars[y].set_alpha(0.6)
            label = "skipped" if "skipped" in fault else "not recovered"
            axes.text(seconds[y], y, f" {label}", va="center", fontsize=9)
    axes.invert_yaxis()
    axes.set_xlabel("seconds to recover (bar); target (tick); red: an invariant failed")
    axes.grid(axis="x", alpha=0.3)
    return _save(figure, folder, "drills-recovery.png")


def cancellation_figure(result: dict[str, Any], folder: Path) -> str:
    figure, axes = plt.subplots(figsize=(6, 3.5))
    rates = [result["legacy_cancel_rate"] * 100, result["omnistock_cancel_rate"] * 100]
    bars = axes.bar(["legacy (stock copies)", "omnistock"], rates, color=["#c0392b", "#3a9d5d"])
    for bar, rate in zip(bars, rates, strict=True):
        axes.annotate(
            f"{rate:.2f} %", (bar.get_x() + bar.get_width() / 2, rate), ha="center", va="bottom"
        )
    axes.set_ylabel("accepted orders cancelled for lack of stock (%)")
    axes.grid(axis="y", alpha=0.3)
    return _save(figure, folder, "cancellations.png")


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / name
    if not path.exists():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def write_report(folder: Path, title: str = "omnistock: a run under retail traffic") -> Path:
    """``folder``/report.html and its PNG figures from the results in ``folder``."""
    page = Page(title)
    simulated = _load(folder, SIMULATE)
    experiment = _load(folder, EXPERIMENT)
    drills = _load(folder, DRILLS)
    if simulated is not None:
        summary = simulated.get("recorder", {}).get("summary", {})
        rows = [
            [op, s["count"], s["errors"], s["per_s"], s["p50_ms"], s["p99_ms"]]
            for op, s in sorted(summary.items())
        ]
        page.section(
            "Traffic",
            _facts(simulated.get("summary", {})),
            table(["operation", "calls", "errors", "per second", "p50 ms", "p99 ms"], rows),
            *traffic_figures(simulated.get("recorder", {}), folder, "traffic"),
        )
    if experiment is not None:
        result = experiment.get("result", experiment)
        page.section(
            "Cancellations: the same demand against the legacy model and omnistock",
            _facts(result),
            cancellation_figure(result, folder),
        )
    if drills is not None:
        faults = drills.get("faults", [])
        rows = [
            [f["fault"], f.get("recovery_s"), f.get("target_s"), f.get("invariants_ok")]
            for f in faults
        ]
        page.section(
            "Fault drills",
            table(["fault", "recovered in s", "target s", "invariants hold"], rows),
            recovery_figure(faults, folder) if faults else "",
            *traffic_figures(drills.get("recorder", {}), folder, "drills"),
        )
    path = folder / "report.html"
    path.write_text(page.render())
    return path


def _facts(values: dict[str, Any]) -> str:
    flat = [[k, v] for k, v in values.items() if not isinstance(v, dict | list)]
    return table(["", ""], flat) if flat else ""
