"""Loader threads and workers yield the CPU to the training step (Linux thread nice values).

Where clips decode on the CPU beside the step, the decoder's threads (DALI's pool, the
prefetch thread, DataLoader workers) and the step's compute threads compete for the same
cores; the step is the critical path, and decoding only has to keep a few batches ahead of it
(`data.prefetch`). A higher nice value gives the step's threads the core whenever both want it,
and the decoder the cycles left over. On Linux a nice value belongs to a thread and threads
inherit their creator's, so lowering the priority of the thread that builds DALI's pipeline
lowers DALI's own threads too.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

MAX_NICE = 19


def thread_nice() -> int:
    """The calling thread's nice value (the process's off Linux)."""
    if sys.platform != "linux":
        return os.getpriority(os.PRIO_PROCESS, 0)
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def lower_thread_priority(increment: int) -> None:
    """Raise the calling thread's nice value by `increment` (capped at 19), and with it that of
    every thread it starts afterwards. A no-op for 0 and off Linux, where the value would apply
    to the whole process, the training step included."""
    if increment <= 0 or sys.platform != "linux":
        return
    tid = threading.get_native_id()
    target = min(MAX_NICE, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    # a sandbox may refuse it: decoding then runs at the step's priority
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid, target)
