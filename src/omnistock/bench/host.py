"""CPU time of the processes on this machine a benchmark runs against: its own children, and
the local stack's PostgreSQL and Kafka (``omnistock stack up``) when they run here. On one
machine the database and the broker share the cores with the services, so what they spend per
unit of work is part of its cost."""

from __future__ import annotations

import os
from pathlib import Path

STACK_DIR = Path(
    os.environ.get("OMNISTOCK_STACK_DIR") or Path(__file__).resolve().parents[3] / ".stack"
).resolve()
_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def process_cpu_ms(pid: int, *, with_reaped_children: bool = False) -> float:
    """User and system time of ``pid`` so far; with ``with_reaped_children``, also that of its
    children that have ended (their time passes to the parent when it reaps them)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks * _TICK_MS


def stack_cpu_ms() -> dict[str, float]:
    """CPU time so far of the local stack's ``postgres`` (the postmaster, the connections' and
    background processes, those that ended included) and ``kafka`` (the broker); a component
    not running here from this stack is left out."""
    postmaster, broker = None, None
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            parents[pid] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        words = command.split()
        if "-D" in words[:-1] and words[words.index("-D") + 1] == str(STACK_DIR / "postgres"):
            postmaster = pid
        elif "kafka.Kafka" in command and str(STACK_DIR) in command:
            broker = pid
    used: dict[str, float] = {}
    try:
        if postmaster is not None:
            used["postgres"] = process_cpu_ms(postmaster, with_reaped_children=True) + sum(
                process_cpu_ms(pid) for pid, parent in parents.items() if parent == postmaster
            )
        if broker is not None:
            used["kafka"] = process_cpu_ms(broker)
    except OSError:  # a connection's process ended between the scan and the read
        return stack_cpu_ms()
    return used
