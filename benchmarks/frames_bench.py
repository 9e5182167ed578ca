"""`vivit bench frames`: the most frames (and the largest micro-batch) that fit a memory budget.

Each probe is one short training run (1 warm-up + 1 timed step) in a fresh process. GPU:
the CUDA allocator is capped at the budget (`set_per_process_memory_fraction`), so a probe
that needs more raises OOM. CPU: the probe is killed when its resident set passes the budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.runner import run_spec
from benchmarks.search import SearchResult, largest_fitting
from benchmarks.specs import BenchSpec


def _prober(
    spec: BenchSpec, budget: int, on_gpu: bool, timeout_s: float, log: Callable[[str], None]
) -> Callable[..., bool]:
    seen: dict[str, bool] = {}

    def fits(**change: int) -> bool:
        probe = spec.with_(warmup=1, steps=1, measure_spatial=False, **change)
        if probe.name in seen:  # the starting point is shared by the T and B searches
            return seen[probe.name]
        if on_gpu:
            probe = probe.with_(gpu_budget_bytes=budget)
        row = run_spec(probe, mem_budget_bytes=None if on_gpu else budget, timeout_s=timeout_s)
        ok = row["status"] == "ok" and row["peak_mem_bytes"] <= budget
        log(
            f"  probe {probe.name}: {row['status']}"
            + (f", peak {row['peak_mem_bytes'] / 2**20:.0f} MiB" if row["status"] == "ok" else "")
            + (" -> fits" if ok else " -> does not fit")
        )
        if row["status"] == "error":
            raise RuntimeError(f"probe {probe.name} failed: {row.get('stderr_tail', '')[-800:]}")
        seen[probe.name] = ok
        return ok

    return fits


def measure_baseline(spec: BenchSpec, timeout_s: float) -> int:
    """Resident set right after imports + model/engine build (what any CPU budget sits on)."""
    row = run_spec(spec.with_(warmup=0, steps=1, measure_spatial=False), timeout_s=timeout_s)
    if row["status"] != "ok":
        raise RuntimeError(f"baseline probe {spec.name} failed: {row.get('error')}")
    return int(row["rss_baseline_now_bytes"])


def run_frames(
    bases: list[BenchSpec],
    *,
    budget_bytes: int | None,
    headroom_bytes: int,
    on_gpu: bool,
    search: str = "both",
    frames_cap: int,
    batch_cap: int,
    timeout_s: float,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """`bases`: one spec per (backbone, variant) at the starting T and B."""
    limits = []
    budgets: dict[str, int] = {}
    for spec in bases:
        bb = spec.backbone.label
        if bb not in budgets:
            budgets[bb] = budget_bytes or measure_baseline(spec, timeout_s) + headroom_bytes
            log(f"{bb}: memory budget {budgets[bb] / 2**30:.2f} GiB")
        budget = budgets[bb]
        fits = _prober(spec, budget, on_gpu, timeout_s, log)
        skipped = SearchResult(None, False)
        by_frames = by_batch = skipped
        if search in ("both", "frames"):
            log(f"{spec.name}: searching the largest T at B={spec.micro_batch}")
            by_frames = largest_fitting(
                lambda t, fits=fits: fits(frames=t), spec.frames, frames_cap
            )
        if search in ("both", "batch"):
            log(f"{spec.name}: searching the largest B at T={spec.frames}")
            by_batch = largest_fitting(
                lambda b, fits=fits: fits(micro_batch=b), spec.micro_batch, batch_cap
            )
        limits.append(
            {
                "backbone": bb,
                "variant": spec.variant,
                "budget_bytes": budget,
                "micro_batch": spec.micro_batch,
                "max_frames": by_frames.best,
                "frames_capped": by_frames.capped,
                "batch_frames": spec.frames,
                "max_batch": by_batch.best,
                "batch_capped": by_batch.capped,
                "probes": len(by_frames.probes) + len(by_batch.probes),
                "frame_probes": by_frames.probes,
                "batch_probes": by_batch.probes,
            }
        )
    return {
        "limits": limits,
        "summary": summarise(limits),
        "note": _note(on_gpu, headroom_bytes, budget_bytes),
    }


def _note(on_gpu: bool, headroom: int, budget: int | None) -> str:
    if on_gpu:
        where = "CUDA allocator capped at the budget" + ("" if budget else " (the whole device)")
    elif budget:
        where = "peak RSS of each probe process under the budget"
    else:
        where = (
            f"peak RSS under a budget of the process's post-build resident set + "
            f"{headroom / 2**20:.0f} MiB (so the budget is about training memory)"
        )
    return f"Binary search (doubling, then bisection to within 1/4), one fresh process per probe; {where}."


def _ratio(a: int | None, b: int | None) -> float | None:
    return a / b if a and b else None


def summarise(limits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """frozen/full ratios per backbone (the method variant against full fine-tuning)."""
    out = []
    for bb in dict.fromkeys(r["backbone"] for r in limits):
        full = next((r for r in limits if r["backbone"] == bb and r["variant"] == "full"), None)
        for frozen in (r for r in limits if r["backbone"] == bb and r["variant"] != "full"):
            if full is None:
                continue
            out.append(
                {
                    "backbone": bb,
                    "variant": frozen["variant"],
                    "micro_batch": full["micro_batch"],
                    "budget_bytes": full["budget_bytes"],
                    "full_frames": full["max_frames"],
                    "frozen_frames": frozen["max_frames"],
                    "frames_ratio": _ratio(frozen["max_frames"], full["max_frames"]),
                    "frozen_capped": frozen["frames_capped"],
                    "full_batch": full["max_batch"],
                    "frozen_batch": frozen["max_batch"],
                    "batch_ratio": _ratio(frozen["max_batch"], full["max_batch"]),
                }
            )
    return out
