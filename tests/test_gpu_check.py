"""The prepared GPU check (benchmarks/gpu/) walked on the CPU, so it cannot rot before a GPU
is lent: `run.sh --dry-run` runs every step with tiny sizes, and the bundle round-trips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from benchmarks.gpu import bundle
from benchmarks.gpu.summary import summarise

REPO = Path(__file__).resolve().parent.parent


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def test_bundle_round_trip_splits_and_drops_other_pythons(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    rng = __import__("random").Random(0)
    blob = bytes(rng.getrandbits(8) for _ in range(300_000))  # incompressible: forces pieces
    _wheel(wheels / "deepspeed-1-py3-none-any.whl", {"deepspeed/__init__.py": b"x = 1\n"})
    _wheel(
        wheels / "nvidia_dali_x-1-py3-none-any.whl",
        {
            "nvidia/dali/libdali.so": blob,
            "nvidia/dali/backend_impl.cpython-312-x86_64-linux-gnu.so": b"312",
            "nvidia/dali/backend_impl.cpython-310-x86_64-linux-gnu.so": b"310",
        },
    )
    limit = 120_000
    calls = bundle.plan(20_000, 300_000, limit=limit)
    assert sum(c.get("dali", 0) for c in calls) == 300_000 and calls[-1]["base"] == 20_000
    assert all(sum(c.values()) <= limit for c in calls)

    folders = bundle.pack(wheels, tmp_path / "b", limit=limit)
    assert len(folders) >= 3
    assert all(sum(f.stat().st_size for f in d.iterdir()) <= limit + 4096 for d in folders)
    target = tmp_path / "site"
    status = bundle.unpack(folders, target)
    assert all(s.startswith("installed") for s in status.values()), status
    assert (target / "nvidia/dali/libdali.so").read_bytes() == blob
    assert (target / "nvidia/dali/backend_impl.cpython-312-x86_64-linux-gnu.so").is_file()
    assert not (target / "nvidia/dali/backend_impl.cpython-310-x86_64-linux-gnu.so").exists()
    assert (target / "deepspeed/__init__.py").read_text() == "x = 1\n"

    # A lost call leaves DALI incomplete: reported and skipped, the rest still installed.
    partial = bundle.unpack(folders[1:], tmp_path / "site2")
    assert partial["dali"].startswith("incomplete") and partial["base"].startswith("installed")
    # A corrupted piece is refused, not extracted.
    piece = next(p for p in folders[0].iterdir() if p.name != "bundle.json")
    piece.write_bytes(b"\0" + piece.read_bytes()[1:])
    assert "sha256" in bundle.unpack(folders, tmp_path / "site3")["dali"]


@pytest.mark.slow
def test_run_sh_dry_run_walks_every_step(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    env = {
        **os.environ,
        "OUT": str(out),
        "VIVIT_GPU_WORK": str(work),
        "PYTHON": sys.executable,
        "VIVIT_GPU_BUDGET_S": "1500",
    }
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks/gpu/run.sh"), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    steps = dict(line.split("\t")[:2] for line in (work / "steps.tsv").read_text().splitlines())
    expected = ["environment", "shards", "fused_adam", "bench_train", "bench_data"]
    expected += ["bench_adam", "bench_cache", "bench_frames", "pytest", "demo"]
    assert {k: steps.get(k) for k in expected} == dict.fromkeys(expected, "0"), steps
    results = json.loads((work / "results" / "results.json").read_text())
    rows = results["train"]["rows"]
    assert {r["status"] for r in rows} == {"ok"}
    assert {r["data_root"] is None for r in rows} == {True, False}, "tensor and loader rows"
    assert results["data"]["result"]["dali_clips_per_s"] > 0
    sweep = results["data"]["result"]["dali_clips_per_s_by_pipelines"]
    assert set(sweep) == {"1", "2"} and min(sweep.values()) > 0, sweep
    assert results["frames"]["summary"], "frames search gave no full/frozen pair"
    cache = results["cache"]
    assert cache["build"]["status"] == "ok" and cache["build"]["build_clips_per_s"] > 0
    assert cache["cache"]["data_decoder"] == "token-cache", "the cache row read the cache"
    assert "spatial_fwd_s" not in cache["cache"] and cache["cache_speedup"] > 0
    summary = (out / "summary.md").read_text()
    assert "DRY RUN" in summary and "loader-inclusive" in summary and "torch AdamW" in summary
    assert "by data.dali_pipelines" in summary
    assert "DALI on whole videos (data.gop_trim=false)" in summary
    assert "cache_speedup" in summary
    assert "128-frame videos, one frame: dali-cpu first" in summary
    assert {p.name for p in out.iterdir()} == {"summary.md", "run.log", "results.tgz"}


def test_summary_reports_failed_and_missing_steps(tmp_path: Path) -> None:
    (tmp_path / "steps.tsv").write_text("install\t0\t3\t90\nbench_train\t124\t210\t210\n")
    text = summarise(tmp_path, tmp_path / "results", dry_run=False)
    assert "| bench_train | TIMED OUT |" in text and "| install | ok |" in text
    assert "pytest: no report" in text and "demo: no results.json" in text
    assert "no target figures" in text and "bench cache: no figures" in text


def test_summary_compares_torch_adamw_with_the_tensor_row(tmp_path: Path) -> None:
    """bench train writes a tensor row and a loader row under one name: bench_adam's tensor
    row is compared with the first (the H200 summary of 2026-11-28 quoted the loader's)."""
    row = {
        **dict(name="B_frozen+attn", backbone="B", variant="frozen+attn", mode="frozen"),
        **dict(frames=32, micro_batch=8, precision="bf16", zero_stage=2, status="ok"),
        "peak_mem_bytes": 2**30,
    }
    train = [
        {**row, "step_time_median_s": 0.0552},
        {**row, "step_time_median_s": 0.0594, "data_root": "/shards"},
    ]
    results = tmp_path / "results"
    (results / "torch-adamw").mkdir(parents=True)
    (results / "results.json").write_text(json.dumps({"train": {"rows": train}}))
    adamw = {"train": {"rows": [{**row, "step_time_median_s": 0.0528}]}}
    (results / "torch-adamw" / "results.json").write_text(json.dumps(adamw))
    text = summarise(tmp_path, results, dry_run=False)
    assert "frozen+attn tensor step: 52.8 ms with torch AdamW vs 55.2 ms in bench train" in text


def test_summary_counts_the_warnings_of_run_log(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text(
        "=== [bench_train] start\n"
        "[rank0]:[W1126 10:57:04.232596960 ProcessGroupNCCL.cpp:1575] Warning: WARNING: "
        "destroy_process_group() was not called before program exit, which can leak resources.\n"
        "[rank0]:[W1126 10:50:18.630430173 ProcessGroupNCCL.cpp:1575] Warning: WARNING: "
        "destroy_process_group() was not called before program exit, which can leak resources.\n"
        "pid=1222 DeprecationWarning: `fork()` may deadlock\n"
        "Traceback (most recent call last):\n"
        "pytest: 3 tests, 0 failed, 0 errors\n"
    )
    text = summarise(tmp_path, tmp_path / "results", dry_run=False, log=log)
    section = text.split("## Warnings and errors in run.log")[1]
    assert "'destroy_process_group() was not called': 2 time(s)" in section
    assert "- 2x `[rank#]:[W# #:#:#.# ProcessGroupNCCL.cpp:#] Warning:" in section
    assert "Traceback (most recent call last):" in section and "'fork()'" in section
    assert "0 errors" not in section and "=== [bench_train]" not in section
    clean = tmp_path / "clean.log"
    clean.write_text("=== [bench_train] exit 0\n")
    text = summarise(tmp_path, tmp_path / "results", dry_run=False, log=clean)
    assert "was not called': 0 time(s)" in text
    assert "run.log: not found" in summarise(tmp_path, tmp_path / "results", dry_run=False)
