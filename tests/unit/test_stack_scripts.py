"""The stack script's shell helpers, run by bash as ``ops/stack.sh`` runs them (errexit,
nounset, pipefail)."""

from __future__ import annotations

import subprocess
from pathlib import Path

COMMON = Path(__file__).resolve().parents[2] / "ops" / "stack" / "common.sh"


def _bash(script: str, *args: str) -> int:
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail; . "{COMMON}"; {script}', "bash", *args],
        check=False,
    ).returncode


def test_a_log_line_is_found_however_much_log_follows_it(tmp_path: Path) -> None:
    log = tmp_path / "kafka.log"
    earlier = "[t] INFO an earlier run\n[t] INFO Kafka Server started\n"
    with log.open("w") as file:
        file.write(earlier)
        file.write("[t] INFO [KafkaRaftServer nodeId=1] Kafka Server started\n")
        # A broker loading many consumer groups right after it started: megabytes of log.
        file.writelines(
            f"[t] INFO Loaded classic group g-{n} with 0 members.\n" for n in range(10**5)
        )
    found = 'log_has_since "$1" "$2" "Kafka Server started"'
    assert _bash(found, str(log), "0") == 0
    assert _bash(found, str(log), str(len(earlier))) == 0
    started = len(earlier) + len("[t] INFO [KafkaRaftServer nodeId=1] Kafka Server started\n")
    assert _bash(found, str(log), str(started)) == 1  # only the line before the offset
    assert _bash(found, str(tmp_path / "missing.log"), "0") == 1
