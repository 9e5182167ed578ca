"""Run one benchmark probe in a fresh process and measure its peak resident memory.

Why a fresh process: peak RSS (`ru_maxrss`) only ever grows, and allocator caches
outlive a configuration, so each configuration needs its own process for its peak
to mean anything. A small trampoline (`trampoline.py`) forks the child, so its
`ru_maxrss` does not inherit this process's size, reaps it with `os.wait4` (the
peak is known even when the child was killed), and polls its RSS to enforce a CPU
memory budget (kill -> recorded as out-of-memory).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

TRAMPOLINE = Path(__file__).with_name("trampoline.py")
OOM_EXIT_CODE = 3
"""Exit status a worker uses after catching MemoryError / CUDA OOM itself."""


@dataclass
class ChildRun:
    """What happened to one child process."""

    returncode: int
    peak_rss_bytes: int
    """The child's own `ru_maxrss` from `wait4` (its peak resident set, killed or not)."""
    wall_s: float
    stdout: str
    stderr: str
    over_budget: bool = False
    """The parent killed it (or its peak ended above) `mem_budget_bytes`."""
    timed_out: bool = False

    @property
    def killed_by_signal(self) -> bool:
        return self.returncode < 0

    @property
    def out_of_memory(self) -> bool:
        """Budget exceeded, the worker's own OOM exit, or SIGKILL (the kernel's OOM killer)."""
        if self.timed_out:
            return False
        return (
            self.over_budget
            or self.returncode == OOM_EXIT_CODE
            or self.returncode == -signal.SIGKILL
            or "MemoryError" in self.stderr[-4000:]
        )


def run_child(
    cmd: list[str],
    *,
    mem_budget_bytes: int | None = None,
    timeout_s: float = 600.0,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> ChildRun:
    """Run `cmd` under the trampoline; return its exit status, own peak RSS and output."""
    with (
        tempfile.TemporaryDirectory(prefix="vivit-child-") as tmp,
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
    ):
        report = Path(tmp) / "report.json"
        budget = "none" if mem_budget_bytes is None else str(int(mem_budget_bytes))
        wrapper = [sys.executable, str(TRAMPOLINE), str(report), budget, str(timeout_s), "--"]
        start = time.perf_counter()
        proc = subprocess.run(
            wrapper + cmd, stdout=out, stderr=err, env=env, cwd=cwd, timeout=timeout_s + 60
        )
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0 or not report.is_file():
            raise RuntimeError(
                f"benchmark trampoline failed ({proc.returncode}): {err.read()[-2000:]}"
            )
        info = json.loads(report.read_text())
        return ChildRun(
            returncode=int(info["returncode"]),
            peak_rss_bytes=int(info["peak_rss_bytes"]),
            wall_s=wall,
            stdout=out.read(),
            stderr=err.read(),
            over_budget=bool(info["over_budget"]),
            timed_out=bool(info["timed_out"]),
        )
