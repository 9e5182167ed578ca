"""Run each configuration in a fresh worker process and turn whatever happened into a row.

A configuration that runs out of memory (CUDA OOM, MemoryError, a child killed by the
kernel or by the `--mem-budget` watchdog) becomes `status: oom`; any other failure
becomes `status: error` with the tail of the child's stderr. The suite never crashes
on a configuration.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks.child import ChildRun, run_child
from benchmarks.specs import BenchSpec
from benchmarks.system import REPO
from common.child_env import checkout_env

STDERR_TAIL = 2000


def child_env() -> dict[str, str]:
    """A worker's environment: this checkout first on the path, all cores unless told."""
    env = checkout_env()
    env.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)))))
    return env


def spec_row(spec: BenchSpec) -> dict[str, Any]:
    """The configuration's own columns, shared by every status."""
    b = spec.backbone
    return {
        "name": spec.name,
        "backbone": b.label,
        "spatial_model": b.model,
        "img_size": b.img_size,
        "patch_size": b.patch_size,
        "model_kwargs": dict(b.model_kwargs),
        "mode": spec.mode,
        "adapter": spec.adapter,
        "variant": spec.variant,
        "frames": spec.frames,
        "micro_batch": spec.micro_batch,
        "precision": spec.precision,
        "ds_config": spec.ds_config,
        "zero_stage": spec.zero_stage,
        "temporal_depth": spec.temporal_depth,
        "num_classes": spec.num_classes,
        "warmup_steps": spec.warmup,
        "timed_steps": spec.steps,
        "data_root": spec.data_root,
    }


def interpret(child: ChildRun, result: dict[str, Any] | None, budget: int | None) -> dict[str, Any]:
    """Status and figures of one finished child."""
    row: dict[str, Any] = {"child_peak_rss_bytes": child.peak_rss_bytes, "wall_s": child.wall_s}
    if budget is not None:
        row["mem_budget_bytes"] = budget
    if child.timed_out:
        row.update(status="error", error="timed out", stderr_tail=child.stderr[-STDERR_TAIL:])
        return row
    if child.out_of_memory or (result or {}).get("status") == "oom":
        reason = (result or {}).get("error")
        if reason is None:
            if child.over_budget:
                reason = f"peak RSS {child.peak_rss_bytes} > budget {budget}"
            else:
                reason = f"child exited {child.returncode}"
        row.update(status="oom", error=reason)
        return row
    if child.returncode != 0 or result is None:
        row.update(
            status="error",
            error=f"child exited {child.returncode}",
            stderr_tail=child.stderr[-STDERR_TAIL:],
        )
        return row
    row.update(result)
    return row


def run_spec(
    spec: BenchSpec, *, mem_budget_bytes: int | None = None, timeout_s: float = 900.0
) -> dict[str, Any]:
    """Time one configuration in its own `python -m benchmarks.train_worker` process."""
    with tempfile.TemporaryDirectory(prefix="vivit-bench-") as tmp:
        cfg_path = Path(tmp) / "spec.json"
        res_path = Path(tmp) / "result.json"
        cfg_path.write_text(json.dumps(spec.to_json()))
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.train_worker",
            "--json-config",
            str(cfg_path),
            "--result",
            str(res_path),
        ]
        child = run_child(
            cmd,
            mem_budget_bytes=mem_budget_bytes,
            timeout_s=timeout_s,
            env=child_env(),
            cwd=str(REPO),
        )
        result = json.loads(res_path.read_text()) if res_path.is_file() else None
    return {**spec_row(spec), **interpret(child, result, mem_budget_bytes)}


def run_all(
    specs: Iterable[BenchSpec],
    *,
    mem_budget_bytes: int | None = None,
    timeout_s: float = 900.0,
    log: Callable[[str], None] = print,
    on_row: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every configuration in turn; a one-line progress note per configuration, and
    `on_row(rows so far)` after each, so that a run stopped by its time limit keeps its rows."""
    rows: list[dict[str, Any]] = []
    specs = list(specs)
    for i, spec in enumerate(specs, 1):
        row = run_spec(spec, mem_budget_bytes=mem_budget_bytes, timeout_s=timeout_s)
        rows.append(row)
        log(f"[{i}/{len(specs)}] {spec.name}: {summary(row)}")
        if on_row is not None:
            on_row(rows)
    return rows


def summary(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"{row['status']} ({row.get('error', '')})"
    return (
        f"{row['step_time_median_s'] * 1e3:.1f} ms/step, {row['clips_per_s']:.2f} clips/s, "
        f"peak {row['peak_mem_bytes'] / 2**20:.0f} MiB"
    )
