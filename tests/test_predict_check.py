"""`benchmarks.predict_check --quick` end to end: videos on disk -> `vivit shards build` ->
two-stage `vivit train` -> `vivit predict` on every held-out file, and a results.json whose
figures are the ones its per-file records give (the check's number must be traceable)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from benchmarks.predict_check import FORWARD
from core.spatial import SpatialConfig, SpatialTransformer
from launch.recipes import QUICK, SPATIAL_KWARGS, SPATIAL_MODEL

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_check_scores_every_held_out_file(tmp_path: Path) -> None:
    torch.manual_seed(0)  # a random-init spatial ViT: the check's plumbing, not its accuracy
    cfg = SpatialConfig(
        model=SPATIAL_MODEL,
        img_size=QUICK.size,
        patch_size=QUICK.patch,
        model_kwargs=dict(SPATIAL_KWARGS),
    )
    weights = tmp_path / "spatial.safetensors"
    save_file(SpatialTransformer(cfg).vit.state_dict(), str(weights))
    out, work = tmp_path / "out", tmp_path / "work"
    cmd = [sys.executable, "-m", "benchmarks.predict_check", "--quick", "--out", str(out)]
    cmd += ["--work", str(work), "--spatial-weights", str(weights)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    r = json.loads((out / "results.json").read_text())
    assert (out / "results.md").is_file()
    with (work / "labels.csv").open() as f:
        rows = list(csv.DictReader(f))
    val = {row["path"]: row["label"] for row in rows if row["split"] == "val"}
    assert len(val) == r["clips"]["val"] == 12
    assert sum(row["split"] == "train" for row in rows) == r["clips"]["train"] == 48
    assert sorted(r["classes"]) == sorted(FORWARD) and len(FORWARD) == 6
    assert r["stage1"]["mode"] == "full" and r["stage2"]["mode"] == "frozen"
    assert r["stage2"]["steps"] == 2 and r["stage2"]["frames"] == QUICK.frames

    p = r["predict"]
    files = p["files"]
    assert sorted(f["video"] for f in files) == sorted(val)  # every held-out file, once
    for f in files:
        assert f["label"] == val[f["video"]]
        assert len(f["top"]) == 5 and set(f["top"]) <= set(FORWARD)
        assert f["views"] == QUICK.eval_clips
    hits1 = sum(f["top"][0] == f["label"] for f in files)
    hits5 = sum(f["label"] in f["top"] for f in files)
    assert p["n"] == len(files) == r["stage2"]["val_videos"]
    assert p["top1"] == pytest.approx(100.0 * hits1 / len(files))
    assert p["top5"] == pytest.approx(100.0 * hits5 / len(files))
    confusion = p["confusion"]
    assert sum(n for row in confusion.values() for n in row.values()) == len(files)
    assert sum(confusion[c].get(c, 0) for c in FORWARD) == hits1
    # predict decodes evaluation's views of the same bytes (`--codec copy`): at most a near-tie
    # may flip, never more than one file's worth
    assert abs(r["eval_minus_predict_top1"]) <= 100.0 / len(files) + 1e-6

    text = r["example_text"]
    assert len(text) == 3 * 6 and text[0].startswith("val/00000.webm  (2 views, ")
    assert all(line.split("%  ")[1] in FORWARD for i, line in enumerate(text) if i % 6)
