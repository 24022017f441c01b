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


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/{pid}/stat`` after the command name (which may hold spaces): the
    process's state is ``[0]``, its parent ``[1]``."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_ms(pid: int, *, with_reaped_children: bool = False) -> float:
    """User and system time of ``pid`` so far; with ``with_reaped_children``, also that of its
    children that have ended (their time passes to the parent when it reaps them)."""
    fields = _stat(pid)
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if with_reaped_children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks * _TICK_MS


def _stack_processes() -> tuple[int | None, int | None, dict[int, int]]:
    """The local stack's postmaster and broker (None when not running here from this stack),
    and every process's parent."""
    postmaster, broker = None, None
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            parents[pid] = int(_stat(pid)[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        words = command.split()
        if "-D" in words[:-1] and words[words.index("-D") + 1] == str(STACK_DIR / "postgres"):
            postmaster = pid
        elif "kafka.Kafka" in command and str(STACK_DIR) in command:
            broker = pid
    return postmaster, broker, parents


def stack_cpu_ms() -> dict[str, float]:
    """CPU time so far of the local stack's ``postgres`` (the postmaster, the connections' and
    background processes, those that ended included) and ``kafka`` (the broker); a component
    not running here from this stack is left out."""
    postmaster, broker, parents = _stack_processes()
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


BROKER_WARM_S = 600.0
"""A broker younger than this still runs much of its code before the JVM compiled it: the first
benchmark after ``omnistock stack up`` measured Kafka at three times its CPU per event."""


def broker_age_s() -> float | None:
    """Seconds since the local stack's broker started; None when it does not run here."""
    _, broker, _ = _stack_processes()
    if broker is None:
        return None
    try:
        started_ticks = int(_stat(broker)[19])
    except (OSError, ValueError, IndexError):
        return None
    since_boot_s = float(Path("/proc/uptime").read_text().split()[0])
    return max(0.0, since_boot_s - started_ticks * _TICK_MS / 1000)
