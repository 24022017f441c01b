"""Child processes that do not outlive the process that started them."""

from __future__ import annotations

import ctypes
import signal
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
