"""`vivit bench train` keeps what it measured: rows are saved as they come, and a row fed by
the real loader ends its DataLoader workers itself (on the H100 a data row's process spent
40 s of its 67 s in torch's 5 s worker joins at exit; the GPU check's time limit then cut
the run before it wrote any row)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

import benchmarks.runner as runner
from benchmarks.specs import TINY_DEBUG, BenchSpec
from benchmarks.train_bench import run_train


def test_every_row_is_saved_as_soon_as_it_is_measured(monkeypatch) -> None:
    specs = [
        BenchSpec(TINY_DEBUG, mode=m, adapter=a) for m, a in (("full", "none"), ("frozen", "attn"))
    ]
    seen: list[str] = []

    def fake_run_spec(spec: BenchSpec, **_: Any) -> dict[str, Any]:
        seen.append(spec.name)
        return {**runner.spec_row(spec), "status": "failed", "error": "not run"}

    monkeypatch.setattr(runner, "run_spec", fake_run_spec)
    saved: list[list[str]] = []
    section = run_train(
        specs,
        mem_budget_bytes=None,
        timeout_s=1.0,
        log=lambda _: None,
        save=lambda s: saved.append([r["name"] for r in s["rows"]]),
    )
    assert saved == [seen[:1], seen[:2]], "one save per row, each with every row so far"
    assert [r["name"] for r in section["rows"]] == seen


@pytest.mark.slow
def test_a_data_fed_row_ends_its_loader_workers(tmp_path: Path) -> None:
    from benchmarks.train_worker import measure
    from data.synthetic import make_synthetic

    root = tmp_path / "s"
    make_synthetic(root, clips=16, val_clips=4, frames=8, size=32, seed=0)
    spec = BenchSpec(
        TINY_DEBUG,
        mode="frozen",
        adapter="attn",
        frames=4,
        micro_batch=2,
        ds_config="ds_configs/fp32.json",
        precision="fp32",
        warmup=1,
        steps=2,
        measure_spatial=False,
        data_root=str(root),
        extra_overrides=("data.workers=2",),
    )
    result = measure(spec)
    assert result["status"] == "ok" and result["data_stats"]["clips"] >= 6
    assert multiprocessing.active_children() == [], "loader workers outlived the measurement"
