"""`vivit bench recipe`: the two-stage method against full fine-tuning, as a whole schedule.

Costs come from measured step times and peaks multiplied by step counts (FORMULA), not from
running whole trainings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from benchmarks.runner import run_spec
from benchmarks.specs import BenchSpec

FORMULA = (
    "steps_per_epoch(b) = ceil(clips_per_epoch / b); "
    "method_time = epochs * (s * steps_per_epoch(m * B) * t_full(T/4, m * B) "
    "+ (1 - s) * steps_per_epoch(B) * t_frozen+adapter(T, B)); "
    "full_time = epochs * steps_per_epoch(B) * t_full(T, B); "
    "method_peak = max(peak_full(T/4, m * B), peak_frozen+adapter(T, B)); full_peak = peak_full(T, B); "
    "s = stage-1 share of the epochs; B = micro-batch; m = stage-1 batch multiple (the recipe: "
    "T/(T/4) = 4, as many frames per step as a T-frame step); t = measured median step time, "
    "peak = measured peak memory (training part on CPU). time_ratio = method_time / full_time "
    "does not depend on epochs (nor on clips, up to rounding)."
)


def recipe_cost(
    t_stage1: float,
    t_stage2: float,
    t_full: float,
    *,
    share: float,
    epochs: int,
    clips: int,
    batch: int,
    stage1_batch_mult: int = 1,
) -> dict[str, float]:
    """Hours of the two-stage method and of full fine-tuning for the same epochs; stage 1's
    steps hold `stage1_batch_mult` x `batch` clips (`t_stage1` measured at that size)."""
    steps = math.ceil(clips / batch) * epochs
    stage1_steps = math.ceil(clips / (batch * stage1_batch_mult)) * epochs
    method = share * stage1_steps * t_stage1 + (1 - share) * steps * t_stage2
    full = steps * t_full
    return {
        "total_steps": steps,
        "stage1_steps": stage1_steps,
        "method_hours": method / 3600,
        "full_hours": full / 3600,
        "time_ratio": method / full,
    }


def run_recipe(
    backbones: list[BenchSpec],
    *,
    adapter: str,
    share: float,
    epochs: int,
    clips: int,
    timeout_s: float,
    stage1_batch_mult: int = 4,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """`backbones`: one spec per backbone at the stage-2 frame count T and micro-batch."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"--stage1-share must be in [0, 1], got {share}")
    if stage1_batch_mult < 1:
        raise ValueError(f"--stage1-batch-mult must be >= 1, got {stage1_batch_mult}")
    rows, parts = [], []
    for base in backbones:
        t = base.frames
        specs = {
            "stage 1: full @ T/4": base.with_(
                mode="full",
                adapter="none",
                frames=max(1, t // 4),
                micro_batch=base.micro_batch * stage1_batch_mult,
            ),
            f"stage 2: frozen+{adapter} @ T": base.with_(mode="frozen", adapter=adapter),
            "baseline: full @ T": base.with_(mode="full", adapter="none"),
        }
        measured = {}
        for part, spec in specs.items():
            row = run_spec(spec.with_(measure_spatial=False), timeout_s=timeout_s)
            log(
                f"{base.backbone.label} {part}: {row['status']}"
                + (
                    f", {row['step_time_median_s'] * 1e3:.1f} ms/step"
                    if row["status"] == "ok"
                    else ""
                )
            )
            parts.append({"part": part, "backbone": base.backbone.label, **row})
            measured[part] = row
        s1, s2, full = measured.values()
        out: dict[str, Any] = {
            "backbone": base.backbone.label,
            "frames": t,
            "stage1_frames": max(1, t // 4),
            "micro_batch": base.micro_batch,
            "stage1_micro_batch": base.micro_batch * stage1_batch_mult,
            "adapter": adapter,
            "epochs": epochs,
            "clips_per_epoch": clips,
            "stage1_share": share,
        }
        if all(r["status"] == "ok" for r in (s1, s2, full)):
            mem_key = (
                "peak_mem_bytes" if s1.get("mem_kind", "").startswith("cuda") else "train_mem_bytes"
            )
            out.update(
                recipe_cost(
                    s1["step_time_median_s"],
                    s2["step_time_median_s"],
                    full["step_time_median_s"],
                    share=share,
                    epochs=epochs,
                    clips=clips,
                    batch=base.micro_batch,
                    stage1_batch_mult=stage1_batch_mult,
                )
            )
            out["memory_measure"] = mem_key
            out["method_peak_bytes"] = max(s1[mem_key], s2[mem_key])
            out["full_peak_bytes"] = full[mem_key]
            out["memory_ratio"] = out["method_peak_bytes"] / max(1, out["full_peak_bytes"])
        else:
            out["status"] = "incomplete: " + ", ".join(
                f"{p}={r['status']}" for p, r in measured.items() if r["status"] != "ok"
            )
        rows.append(out)
    return {"formula": FORMULA, "rows": rows, "parts": parts}
