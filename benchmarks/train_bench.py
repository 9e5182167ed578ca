"""`vivit bench train`: step time, clips/s, peak memory, TFLOP/s and MFU over a grid."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.report import data_over_tensor
from benchmarks.runner import run_all
from benchmarks.specs import BenchSpec

MEMORY_NOTE = (
    "GPU: `torch.cuda.max_memory_allocated` over the whole process (peak) and its growth after "
    "the model and engine were built (train). CPU: peak resident set (`ru_maxrss`) of a fresh "
    "process per configuration (peak), and peak minus the resident set right after imports + "
    "model/engine build (train: the training part)."
)


def flops_formula() -> str:
    """One-line summary for results.md; the full derivation is the docstring of benchmarks/flops.py."""
    return (
        "see benchmarks/flops.py; per block 8ND^2 + 4NDH + 4N^2D, full step = 3 x forward, "
        "frozen step = spatial forward + 3 x (adapter + temporal + head) forward."
    )


def run_train(
    specs: list[BenchSpec],
    *,
    mem_budget_bytes: int | None,
    timeout_s: float,
    log: Callable[[str], None] = print,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every configuration in its own process; the section for results.json, also handed to
    `save` after every row (the GPU check's time limit stopped runs that wrote nothing)."""
    on_row = None if save is None else (lambda rows: save(train_section(rows)))
    rows = run_all(
        specs, mem_budget_bytes=mem_budget_bytes, timeout_s=timeout_s, log=log, on_row=on_row
    )
    return train_section(rows)


def train_section(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows, each `--data` row with its tensor twin's ratio when both were measured."""
    key = ("backbone", "variant", "frames", "micro_batch")
    for pair in data_over_tensor(rows):  # both sides of `--data` measured in this run
        for r in rows:
            fed = r.get("data_root") and r["status"] == "ok"
            if fed and all(r[k] == pair[k] for k in key):
                r["data_over_tensor"] = pair["data_over_tensor"]
                r["tensor_step_time_median_s"] = pair["tensor_step_s"]
    return {"rows": rows, "memory_note": MEMORY_NOTE, "flops_formula": flops_formula()}
