"""CPU accounting of the local stack's processes, against stand-ins with their command lines:
a postmaster whose connection processes come and go, and a broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from omnistock.bench import host

BURN = "import sys, time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"
DONE = "print('burnt', flush=True)\n"
# A child burns CPU and ends (reaped: its time passes to the postmaster); another burns and
# stays, as connection processes do.
CHILD = (
    BURN.format(s=0.3) + "if sys.argv[1:]:\n    print('burnt', flush=True)\n    time.sleep(60)\n"
)
POSTMASTER = (
    BURN.format(s=0.3)
    + "import subprocess\n"
    + f"burn = [sys.executable, '-c', {CHILD!r}]\n"
    + "subprocess.run(burn)\n"
    + "alive = subprocess.Popen(burn + ['stay'])\n"
    + DONE
    + "time.sleep(60)\n"
)
BROKER = BURN.format(s=0.2) + DONE + "time.sleep(60)\n"


def _started(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)


def test_the_stack_cpu_counts_a_postmaster_with_its_ended_and_live_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host, "STACK_DIR", tmp_path)
    assert host.stack_cpu_ms() == {}  # nothing of this stack runs
    postgres = str(tmp_path / "postgres")
    properties = str(tmp_path / "kafka" / "server.properties")
    postmaster = _started([sys.executable, "-c", POSTMASTER, "-D", postgres])
    broker = _started([sys.executable, "-c", BROKER, "kafka.Kafka", properties])
    try:
        # Both the postmaster and its live child say when they are done burning.
        assert postmaster.stdout is not None
        assert broker.stdout is not None
        assert [postmaster.stdout.readline().strip() for _ in range(2)] == ["burnt", "burnt"]
        assert broker.stdout.readline().strip() == "burnt"
        used = host.stack_cpu_ms()
        # Its own 0.3 s, the ended child's 0.3 s and the live one's 0.3 s.
        assert used["postgres"] >= 850
        assert 150 <= used["kafka"] < 850
    finally:
        for process in (postmaster, broker):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_the_broker_age_is_that_of_the_stack_broker_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host, "STACK_DIR", tmp_path)
    assert host.broker_age_s() is None  # no broker of this stack runs
    properties = str(tmp_path / "kafka" / "server.properties")
    broker = _started([sys.executable, "-c", BROKER, "kafka.Kafka", properties])
    try:
        assert broker.stdout is not None
        assert broker.stdout.readline().strip() == "burnt"
        age = host.broker_age_s()
        # Started for this test (it burnt 0.2 s of CPU first): young, not as old as the machine.
        assert age is not None
        assert 0.2 <= age < 60
        assert age < host.BROKER_WARM_S
    finally:
        os.killpg(broker.pid, signal.SIGKILL)
        broker.wait()
