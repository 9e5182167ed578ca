"""Peak-memory measurement of child processes, and how failures become rows (oom / error)."""

from __future__ import annotations

import sys

from benchmarks.child import OOM_EXIT_CODE, run_child
from benchmarks.runner import interpret, run_spec
from benchmarks.specs import TINY_DEBUG, BenchSpec

MB = 2**20

ALLOC = """
import resource, sys
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, flush=True)
block = bytearray(b"\\x01") * ({mb} * 2**20)   # written, so every page is resident
block[::4096] = b"\\x02" * len(block[::4096])
print(len(block), flush=True)
"""


def _alloc(mb: int, **kwargs):
    return run_child([sys.executable, "-c", ALLOC.format(mb=mb)], timeout_s=60, **kwargs)


def test_peak_rss_sees_a_known_allocation() -> None:
    run = _alloc(200)
    assert run.returncode == 0, run.stderr
    baseline = int(run.stdout.split()[0])
    assert run.peak_rss_bytes - baseline >= 200 * MB
    assert run.peak_rss_bytes - baseline < 260 * MB  # and not wildly more


def test_budget_kills_and_records_oom() -> None:
    small = _alloc(1)
    budget = small.peak_rss_bytes + 100 * MB
    run = _alloc(400, mem_budget_bytes=budget)
    assert run.over_budget and run.out_of_memory
    row = interpret(run, None, budget)
    assert row["status"] == "oom" and "budget" in row["error"]
    within = _alloc(20, mem_budget_bytes=budget)
    assert within.returncode == 0 and not within.out_of_memory


def test_memory_error_and_other_failures_are_told_apart() -> None:
    oom = run_child([sys.executable, "-c", "raise MemoryError('too big')"], timeout_s=60)
    assert interpret(oom, None, None)["status"] == "oom"
    coded = run_child(
        [sys.executable, "-c", f"import sys; sys.exit({OOM_EXIT_CODE})"], timeout_s=60
    )
    assert interpret(coded, None, None)["status"] == "oom"
    boom = run_child([sys.executable, "-c", "raise ValueError('boom 42')"], timeout_s=60)
    row = interpret(boom, None, None)
    assert row["status"] == "error" and "boom 42" in row["stderr_tail"]
    slow = run_child([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=1)
    assert interpret(slow, None, None) | {} and slow.timed_out
    assert interpret(slow, None, None)["status"] == "error"


def test_worker_over_a_certainly_exceeded_budget_is_oom() -> None:
    spec = BenchSpec(TINY_DEBUG, ds_config="ds_configs/fp32.json", precision="fp32", num_classes=5)
    row = run_spec(spec, mem_budget_bytes=64 * MB, timeout_s=120)
    assert row["status"] == "oom", row
    assert row["name"] == spec.name and row["mem_budget_bytes"] == 64 * MB
