"""`vivit predict`: checkpoints of `vivit train` (full, frozen) classify raw video files.

The views are evaluation's (same frames, crops, normalisation as the shard loader); the model is
rebuilt from the checkpoint alone (class names included); frozen checkpoints load the spatial
weights they pin, and refuse them missing or changed; bad inputs are one-line errors.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from core.ckpt_manifest import write_manifest
from core.init import find_checkpoint
from core.predict import PredictError
from data.augment import normalise
from data.config import DataConfig
from data.synthetic import CLASSES, SHAPES, make_synthetic, synth_clip
from data.transcode import encode_frames, kept_frames, prepare_video
from data.video_file import VideoFileError, eval_views, probe_video, read_views
from launch.predict import Predictor
from tests.data_helpers import cpu_eval_batches, video_record, write_shard_set
from tests.test_train_cli import tiny_args, vivit

REPO = Path(__file__).resolve().parent.parent


def run_predict(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "launch.cli", "predict", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("vivit predict: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]


slow = pytest.mark.slow  # uses `trained`: two tiny training runs (~1-2 min on a 2-core CPU)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A synthetic set, a spatial weights file, and a full and a frozen tiny checkpoint."""
    from core.config import load_config
    from core.spatial import SpatialTransformer

    tmp = tmp_path_factory.mktemp("predict")
    shards = make_synthetic(
        tmp / "synth", clips=32, val_clips=8, frames=8, size=32, seed=0, objects_dir=None
    )
    spatial_cfg = load_config("configs/tiny.yaml").spatial
    torch.manual_seed(1)
    weights = tmp / "spatial.safetensors"
    save_file(SpatialTransformer(spatial_cfg).vit.state_dict(), str(weights))
    runs = {}
    for mode, extra in (("full", []), ("frozen", [f"spatial.weights={weights}"])):
        runs[mode] = tmp / mode
        vivit(
            "train",
            *tiny_args(shards, runs[mode], f"mode={mode}", "train.steps=2", *extra),
            "tracking.enabled=false",
        )
    return {"shards": shards, "weights": weights, **runs}


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, int]]:
    """Held-out synthetic clips written as files: VP9 (DALI on CPU) and H.264 (PyAV)."""
    out = tmp_path_factory.mktemp("videos")
    files = []
    for i, codec in enumerate(["vp9", "h264"]):
        cls, _, frames = synth_clip(7, "val", i, 12, 32, list(SHAPES))
        path = out / f"clip{i}.{'webm' if codec == 'vp9' else 'mp4'}"
        path.write_bytes(encode_frames(frames, fps=8.0, codec=codec))
        files.append((path, cls))
    return files


@slow
def test_checkpoint_stores_class_names(trained: dict[str, Path]) -> None:
    for mode in ("full", "frozen"):
        meta = json.loads((find_checkpoint(trained[mode]) / "meta.json").read_text())
        assert meta["classes"] == CLASSES
        assert meta["clip_fps"] is None and meta["clip_max_seconds"] is None


@slow
@pytest.mark.parametrize("mode", ["full", "frozen"])
def test_predict_json(trained: dict[str, Path], videos: list[tuple[Path, int]], mode: str) -> None:
    proc = run_predict(str(trained[mode]), *[str(p) for p, _ in videos], "--top-k", "3", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out.keys() == {"checkpoint", "step", "mode", "num_classes", "predictions", "errors"}
    assert out["errors"] == []
    assert out["mode"] == mode and out["step"] == 2 and out["num_classes"] == len(CLASSES)
    assert [p["video"] for p in out["predictions"]] == [str(p) for p, _ in videos]
    assert [p["decoder"] for p in out["predictions"]] == ["dali-cpu", "pyav"]
    for pred in out["predictions"]:
        assert pred.keys() == {"video", "views", "decoder", "top"}
        assert pred["views"] == 2  # tiny.yaml: 2 clips x 1 crop
        assert len(pred["top"]) == 3
        probs = [c["prob"] for c in pred["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        for c in pred["top"]:
            assert c.keys() == {"index", "label", "prob"} and CLASSES[c["index"]] == c["label"]


@slow
def test_predict_text_names_classes(trained: dict[str, Path], videos) -> None:
    path = str(videos[0][0])
    proc = run_predict(str(trained["full"]), path, "--top-k", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == f"{path}  (2 views, dali-cpu)"
    assert len(lines) == 3
    for line in lines[1:]:
        prob, label = line.split("%  ")
        assert 0 <= float(prob) <= 100 and label in CLASSES


@slow
@pytest.mark.parametrize("mode", ["full", "frozen"])
def test_predictor_holds_the_checkpoint_weights(trained: dict[str, Path], mode: str) -> None:
    with Predictor(trained[mode], device="cpu") as predictor:
        own = predictor.model.state_dict()
    saved = load_file(str(find_checkpoint(trained[mode]) / "model.safetensors"))
    assert saved and all(torch.equal(own[k], v) for k, v in saved.items())
    if mode == "frozen":  # spatial weights from the pinned file, not from the run's config
        spatial = load_file(str(trained["weights"]))
        assert all(torch.equal(own[f"spatial.vit.{k}"], v) for k, v in spatial.items())
    else:
        assert any(k.startswith("spatial.") for k in saved)


@slow
def test_bad_videos_are_one_line_errors(trained: dict[str, Path], videos, tmp_path: Path) -> None:
    good, other = str(videos[0][0]), str(videos[1][0])
    mixed = run_predict(str(trained["full"]), good, str(tmp_path / "nope.mp4"), other)
    one_line_error(mixed, "nope.mp4", "no such file")
    # the readable videos are still answered, in order, before the failure is named
    answered = [line.split("  (")[0] for line in mixed.stdout.splitlines() if "views," in line]
    assert answered == [good, other], mixed.stdout
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    only_bad = run_predict(str(trained["full"]), text.as_posix())
    one_line_error(only_bad, "notes.mp4", "not a readable")
    assert only_bad.stdout == ""
    as_json = run_predict(str(trained["full"]), good, text.as_posix(), "--json")
    assert as_json.returncode == 2, as_json.stderr[-3000:]
    out = json.loads(as_json.stdout)
    assert [p["video"] for p in out["predictions"]] == [good]
    assert [e["video"] for e in out["errors"]] == [text.as_posix()]
    assert "not a readable" in out["errors"][0]["error"]
    one_line_error(run_predict(str(tmp_path / "no-run"), good), "no complete checkpoint")
    if not torch.cuda.is_available():
        one_line_error(run_predict(str(trained["full"]), good, "--device", "cuda"), "no CUDA GPU")


@slow
def test_frozen_spatial_weights_changed_or_missing(trained: dict[str, Path], videos) -> None:
    weights: Path = trained["weights"]
    original = weights.read_bytes()
    good = str(videos[0][0])
    try:
        state = load_file(str(weights))
        state["cls_token"] = state["cls_token"] + 1.0
        save_file(state, str(weights))
        one_line_error(run_predict(str(trained["frozen"]), good), str(weights), "sha256")
        weights.unlink()
        one_line_error(run_predict(str(trained["frozen"]), good), str(weights), "missing")
    finally:
        weights.write_bytes(original)
    assert run_predict(str(trained["frozen"]), good).returncode == 0


def _edited_copy(src: Path, dst: Path, **changes) -> Path:
    """A copy of a checkpoint whose meta.json differs, with its sha256.json rewritten."""
    shutil.copytree(find_checkpoint(src), dst)
    meta = json.loads((dst / "meta.json").read_text())
    for key, value in changes.items():
        if value is None and key == "classes":
            meta.pop(key)
        else:
            meta[key] = value
    (dst / "meta.json").write_text(json.dumps(meta))
    (dst / "sha256.json").unlink()
    write_manifest(dst)
    return dst


@slow
def test_frozen_random_spatial_is_refused(trained: dict[str, Path], tmp_path: Path) -> None:
    ckpt = _edited_copy(trained["frozen"], tmp_path / "step_0000002", spatial_weights=None)
    with pytest.raises(PredictError, match="randomly initialised"):
        Predictor(ckpt, device="cpu")


@slow
def test_checkpoint_without_class_names(trained: dict[str, Path], videos, tmp_path: Path) -> None:
    ckpt = _edited_copy(trained["full"], tmp_path / "step_0000002", classes=None)
    with Predictor(ckpt, device="cpu") as predictor:
        pred = predictor.predict(videos[0][0], top_k=12)
    assert sorted(c.label for c in pred.top) == sorted(f"class {i}" for i in range(12))


# --- the views: evaluation's, without a shard ------------------------------------------------


@pytest.mark.parametrize("decoder", ["pyav", "dali"])
def test_file_views_equal_the_eval_loader_views(tmp_path: Path, decoder: str) -> None:
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (10, 12, 8, 3), dtype=np.uint8), 4, axis=1)
    frames = np.repeat(frames, 4, axis=2)  # 10 frames of 48x32 (non-square: 3 crops differ)
    record = video_record(frames, 1)
    root = write_shard_set(tmp_path / "shards", {"val": [[("v0", record)]]}, ["a", "b"])
    video = tmp_path / "v0.webm"
    video.write_bytes(record["webm"])
    cfg = DataConfig(
        root=str(root), frames=4, eval_clips=2, eval_crops=3, decoder=decoder, workers=0
    )
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    with cpu_eval_batches(cfg, batch_size=1, mean=mean, std=std) as batches:
        (loader_views, labels), *rest = list(batches)
        assert not rest and labels.tolist() == [1]

        info = probe_video(video)
        assert (info.frames, info.height, info.width, info.codec) == (10, 48, 32, "vp9")
        views = eval_views(info, frames=4, sampling="uniform", stride=2, clips=2, crops=3)
        dali = batches._dali if decoder == "dali" else None
        raw, used = read_views(info, views, size=16, dali=dali)
    assert used == ("dali-cpu" if decoder == "dali" else "pyav")
    assert raw.dtype == torch.uint8
    clips = normalise(raw, mean, std, torch.float32)
    assert clips.shape == loader_views[0].shape == (6, 4, 3, 16, 16)
    torch.testing.assert_close(clips, loader_views[0])


def test_kept_frames_are_the_shard_builders(tmp_path: Path) -> None:
    """A file read directly sees the frames `vivit shards build --fps --max-seconds` keeps."""
    frames = np.empty((48, 32, 32, 3), np.uint8)
    for i in range(48):
        frames[i] = 5 * i  # grey level tells the source frame
    src = tmp_path / "src.webm"
    src.write_bytes(encode_frames(frames, fps=24, codec="vp9", lossless=True))
    info = probe_video(src)
    assert info.frames == 48 and info.fps == pytest.approx(24)
    kept = kept_frames(info.times, info.fps, 8.0, 1.5)
    assert kept == list(range(0, 36, 3))
    built = prepare_video(src, codec="vp9", fps=8.0, max_seconds=1.5)
    assert built.meta["frames"] == len(kept)
    from data.pyav_decode import decode_frames

    levels = decode_frames(built.data, list(range(len(kept))))[:, 16, 16, 0].astype(int)
    assert [round(v / 5) for v in levels] == kept
    views = eval_views(
        info,
        frames=4,
        sampling="uniform",
        stride=1,
        clips=1,
        crops=1,
        clip_fps=8.0,
        clip_max_seconds=1.5,
    )
    assert set(views[0][0].tolist()) <= set(kept) and max(views[0][0]) > 24


def test_probe_refuses_a_file_without_video(tmp_path: Path) -> None:
    with pytest.raises(VideoFileError, match="no such file"):
        probe_video(tmp_path / "missing.webm")
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(VideoFileError, match="not a file"):
        probe_video(tmp_path / "folder.mp4")
    junk = tmp_path / "junk.webm"
    junk.write_bytes(b"\x1aE\xdf\xa3garbage" * 8)
    with pytest.raises(VideoFileError, match="junk.webm"):
        probe_video(junk)
