"""`omnistock stack`: a second `up` is a no-op, and `down` leaves none of its processes.

Runs a second, private stack (its own folder and ports) so that the shared one the other tests
use is not disturbed. The Kafka jars come from the shared cache.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def stack(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omnistock.cli", "stack", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def processes_using(folder: Path) -> list[str]:
    """Every process whose command line or working directory is in ``folder`` (PostgreSQL's
    backends name no folder, but work inside their data directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(folder) in cmdline or cwd.startswith(str(folder)):
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def test_second_up_is_a_no_op_and_down_leaves_nothing_running(tmp_path: Path) -> None:
    folder = tmp_path / "stack"
    env = {
        **os.environ,
        "OMNISTOCK_STACK_DIR": str(folder),
        "OMNISTOCK_PG_PORT": str(free_port()),
        "OMNISTOCK_KAFKA_PORT": str(free_port()),
        "OMNISTOCK_KAFKA_CONTROLLER_PORT": str(free_port()),
        "OMNISTOCK_KAFKA_PROXIED_PORT": str(free_port()),
        "OMNISTOCK_KAFKA_PROXY_PORT": str(free_port()),
        "OMNISTOCK_MARIADB_PORT": str(free_port()),
        "OMNISTOCK_KAFKA_LIBS": str(REPO / ".cache" / "kafka" / "libs"),
    }
    try:
        first = stack(env, "up")
        assert first.returncode == 0, first.stdout + first.stderr
        running = processes_using(folder)
        assert len(running) >= 5, running  # postgres and its workers, kafka, mariadb

        started = time.monotonic()
        second = stack(env, "up")
        assert second.returncode == 0, second.stdout + second.stderr
        output = second.stdout + second.stderr
        for component in ("postgres", "mariadb", "kafka"):
            assert f"{component}: already running" in output, output
        assert time.monotonic() - started < 10, "a second up must not install or restart anything"
        assert sorted(processes_using(folder)) == sorted(running), "the second up started processes"

        status = stack(env, "status")
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        down = stack(env, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert processes_using(folder) == []
    assert stack(env, "status").returncode == 3
