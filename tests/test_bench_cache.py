"""`vivit bench cache`: the per-epoch arithmetic and its report (the end-to-end run on the CPU is
`tests/test_gpu_check.py`'s dry run, which asserts its figures)."""

from __future__ import annotations

import pytest

from benchmarks.cache_bench import cache_figures
from benchmarks.report import render, targets

BUILD = {"status": "ok", "clips": 48, "views": 1, "build_s": 2.4, "build_clips_per_s": 20.0}
BUILD |= {"bytes_per_clip": 30_000, "patch_tokens": "whole", "pool_grid": 4}


def _row(step_s: float, wait_s: float = 0.0) -> dict:
    return {
        "status": "ok",
        "micro_batch": 4,
        "step_time_median_s": step_s - wait_s,
        "data_step_time_median_s": step_s,
        "data_wait_median_s": wait_s,
    }


def test_cache_figures_are_per_epoch_ratios_of_loader_inclusive_steps() -> None:
    figures = cache_figures(BUILD, _row(0.1, wait_s=0.03), _row(0.02))
    assert figures["epoch_s_videos"] == pytest.approx(48 / 4 * 0.1)
    assert figures["cache_speedup"] == pytest.approx(5.0)
    assert figures["build_epochs_equivalent"] == pytest.approx(2.4 / 1.2)
    assert figures["break_even_epochs"] == pytest.approx(2.4 / (1.2 - 0.24))
    assert figures["cache_clips_per_s"] == pytest.approx(200.0)


def test_a_cache_slower_than_videos_never_pays_for_itself() -> None:
    figures = cache_figures(BUILD, _row(0.05), _row(0.08))
    assert figures["cache_speedup"] < 1 and figures["break_even_epochs"] is None


def test_report_states_the_cache_target_and_table() -> None:
    section = {"build": BUILD, "videos": _row(0.1, 0.03), "cache": _row(0.04), "views": 1}
    section |= cache_figures(BUILD, section["videos"], section["cache"])
    section["where"] = "tiny-debug_frozen+attn_T8_B4_fp32, 1 view(s), whole patch tokens"
    results = {"cache": section, "environment": {"device": {"kind": "cpu"}}}
    (target,) = [t for t in targets(results) if "token cache" in t["target"]]
    assert target["value"] == pytest.approx(2.5) and target["verdict"] == "missed by 2.00x"
    text = render(results)
    assert "| cache_speedup (per epoch) | 2.50x |" in text
    assert "| cache pays for itself after | 3.33 epochs |" in text
    failed = render({"cache": {"build": {"status": "error", "error": "exit 2"}}})
    assert "cache build: error (exit 2)" in failed
