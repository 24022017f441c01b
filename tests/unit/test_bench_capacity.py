"""The capacity benchmark's reading of its curve: which rates count as kept up with, what a
deployment's CPU is, and the plot it leaves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from omnistock.bench.orders import capacity
from omnistock.bench.orders.cpu import deployment_ms


def _point(offered: float, accepted: float, p99: float) -> dict[str, Any]:
    return {
        "offered_per_s": offered,
        "accepted_per_s": accepted,
        "confirm_p50_ms": p99 / 2,
        "confirm_p99_ms": p99,
        "refused": 0,
        "cpu_ms_per_order": 20.0,
        "cores_needed": offered * 20 / 1000,
    }


def test_a_rate_is_kept_up_with_when_p99_is_under_target_and_nearly_all_is_accepted() -> None:
    assert capacity._kept_up(_point(50, 50, 120))
    assert not capacity._kept_up(_point(100, 99, capacity.TARGET_P99_MS))  # at the target: not
    # Fast answers for the few orders let in do not count as keeping up.
    assert not capacity._kept_up(_point(100, 90, 80))
    assert not capacity._kept_up(_point(100, 100, float("nan")))  # nothing confirmed


def test_the_load_generator_is_no_part_of_a_deployment() -> None:
    used = {"orders": 5.0, "payments": 4.0, "load": 0.7, "postgres": 7.5, "kafka": 0.9}
    assert deployment_ms(used) == 17.4


def test_the_plot_of_a_curve_is_a_png_in_the_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(capacity, "PLOTS", tmp_path / "reports")
    curve = [_point(25, 25, 90), _point(50, 50, 130), _point(100, 80, 6_000)]
    path = capacity._plot(_point(10, 10, 70), curve)
    assert path.parent == tmp_path / "reports"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
