"""`vivit bench train --quick` end to end: real trainer, one process per configuration."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.recipe_bench import recipe_cost

pytestmark = pytest.mark.slow  # ~60-90 s on a shared 2-core CPU


def test_bench_train_quick_writes_finite_results(tmp_path: Path) -> None:
    out = tmp_path / "res"
    assert main(["train", "--quick", "--no-small", "--frames", "8", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = results["train"]["rows"]
    assert {r["variant"] for r in rows} == {"full", "frozen+none", "frozen+mlp", "frozen+attn"}
    for row in rows:
        assert row["status"] == "ok", row
        for key in (
            "step_time_median_s",
            "clips_per_s",
            "peak_mem_bytes",
            "tflops",
            "flops_per_step",
        ):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert row["loss_finite"]
        assert row["peak_mem_bytes"] >= row["rss_baseline_now_bytes"]
    full = next(r for r in rows if r["mode"] == "full")
    frozen = next(r for r in rows if r["variant"] == "frozen+attn")
    assert frozen["frozen_params"] > 0 and full["frozen_params"] == 0
    assert frozen["flops_per_step"] < full["flops_per_step"]
    assert frozen["spatial_fwd_s"] > 0
    for row in (full, frozen):  # where the step goes: every phase timed, adding up to a step
        phases = row["phase_s"]
        assert all(phases[k] > 0 for k in ("forward", "backward", "optimizer")), phases
        total = phases["forward"] + phases["backward"] + phases["optimizer"]
        assert 0.5 < total / row["step_time_median_s"] < 2.0, (phases, row["step_time_median_s"])
    assert "spatial_forward" not in full["phase_s"]
    assert frozen["phase_s"]["spatial_forward"] < frozen["phase_s"]["forward"] * 1.5
    assert frozen["phase_s"]["backward"] < full["phase_s"]["backward"]  # nothing spatial to train
    env = results["environment"]
    assert env["versions"]["torch"] and env["versions"]["deepspeed"] and env["versions"]["timm"]
    assert "bench train --quick" in env["command"]
    md = (out / "results.md").read_text()
    assert "frozen / full ratios" in md and "| tiny-debug | frozen+attn | 8 | 4 |" in md
    assert "### Where a step goes" in md
    png = out / "train_tiny-debug.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_over_budget_configurations_are_oom_and_the_suite_goes_on(tmp_path: Path) -> None:
    out = tmp_path / "oom"
    argv = [
        "train",
        "--quick",
        "--no-small",
        "--frames",
        "16",
        "--mem-budget",
        "0.1",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    rows = json.loads((out / "results.json").read_text())["train"]["rows"]
    assert len(rows) == 4 and all(r["status"] == "oom" for r in rows)
    assert "OOM" in (out / "results.md").read_text()


def test_recipe_cost_formula() -> None:
    cost = recipe_cost(1.0, 2.0, 4.0, share=0.5, epochs=2, clips=10, batch=4)
    assert cost["total_steps"] == 6  # ceil(10 / 4) * 2
    assert cost["method_hours"] == pytest.approx(6 * 1.5 / 3600)
    assert cost["full_hours"] == pytest.approx(6 * 4.0 / 3600)
    assert cost["time_ratio"] == pytest.approx(1.5 / 4.0)
    # the recipe's stage 1: 4x the clips per step, so ceil(10 / 16) * 2 = 2 stage-1 steps
    cost = recipe_cost(3.0, 2.0, 4.0, share=0.5, epochs=2, clips=10, batch=4, stage1_batch_mult=4)
    assert cost["stage1_steps"] == 2 and cost["total_steps"] == 6
    assert cost["method_hours"] == pytest.approx((0.5 * 2 * 3.0 + 0.5 * 6 * 2.0) / 3600)
    assert cost["time_ratio"] == pytest.approx((0.5 * 2 * 3.0 + 0.5 * 6 * 2.0) / (6 * 4.0))


def test_results_record_the_pinned_commit(monkeypatch):
    """The GPU machine's copy of the tree has no usable git state: VIVIT_GIT_COMMIT wins."""
    from benchmarks.system import environment

    monkeypatch.setenv("VIVIT_GIT_COMMIT", "0123abc")
    assert environment(["x"])["git_commit"] == "0123abc"
    monkeypatch.delenv("VIVIT_GIT_COMMIT")
    assert environment(["x"])["git_commit"] != "0123abc"


def test_results_record_the_threads_the_runs_used(monkeypatch):
    """Timings on a 2-core CPU depend on the step's thread count: the environment names it."""
    import torch

    from benchmarks.system import environment

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    recorded = environment(["x"])["threads"]
    assert recorded == {"torch": torch.get_num_threads(), "OMP_NUM_THREADS": "1"}


def test_backbone_by_label_from_either_grid() -> None:
    from benchmarks import specs

    assert specs.backbone("tiny-debug") is specs.TINY_DEBUG
    assert specs.backbone("ViT-B/16") is specs.GPU_MAIN
    with pytest.raises(ValueError, match=r"'ViT-X'.*tiny-debug.*ViT-B/16"):
        specs.backbone("ViT-X")


def test_cache_bench_names_an_unknown_backbone(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown backbone 'ViT-X'"):
        main(["cache", "--quick", "--backbones", "ViT-X", "--out", str(tmp_path)])
