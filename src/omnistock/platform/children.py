"""Child processes: ports of their own, and no outliving the process that started them."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import socket
import sys

PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with_parent() -> None:
    """For ``Popen(preexec_fn=...)``: the child gets SIGTERM when its parent dies, however it
    dies (a SIGKILL or an abort skips every cleanup), so that no service of a run keeps its
    port, its consumer group membership and its CPU after the run is gone.

    The signal follows the parent *thread*: spawn from the event loop's thread, never from a
    worker thread that may end before the child."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free now. The sockets are held until all are chosen: closed
    one by one, the kernel may hand the same port out twice, and two children would then race
    for it (one answering what was meant for the other)."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            probe = held.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))
            ports.append(int(probe.getsockname()[1]))
        return ports
