"""The synthetic action set: time-reversal pairs, determinism, encoded clips, still images."""

from __future__ import annotations

import io
import json
from pathlib import Path

import av
import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from data.inspect import inspect_shards
from data.synthetic import (
    CLASSES,
    FLIP_PAIRS,
    SHAPES,
    make_synthetic,
    render_clip,
    reverse_class,
    synth_clip,
)


@pytest.mark.parametrize("i", range(6))
def test_reversed_clip_is_the_paired_class(i):
    cls, params, clip = synth_clip(seed=1, split="train", i=i, frames=8, size=32, objects=SHAPES)
    paired = render_clip(reverse_class(cls), params, 8, 32, SHAPES)
    np.testing.assert_array_equal(clip[::-1], paired)
    assert not np.array_equal(clip, paired)  # the pair differs: order is the only signal


def test_class_pairs_are_motion_reversals():
    assert len(CLASSES) % 2 == 0
    assert [CLASSES[a] for a, _ in FLIP_PAIRS] == ["moves right", "rotates clockwise"]
    assert reverse_class(reverse_class(5)) == 5


def _records(root: Path, split: str) -> list[dict]:
    return list(
        wds.WebDataset(sorted(str(p) for p in root.glob(f"{split}-*.tar")), shardshuffle=False)
    )


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthetic(
        tmp_path_factory.mktemp("syn"), clips=20, val_clips=6, frames=8, size=32, seed=7, workers=1
    )


def test_make_synthetic_layout(synth):
    m = json.loads((synth / "manifest.json").read_text())
    assert m["flip_safe"] is False and m["flip_pairs"] == FLIP_PAIRS
    assert m["classes"] == CLASSES
    assert m["totals"] == {"train": 20, "val": 6}
    assert inspect_shards(synth).ok
    recs = _records(synth, "train")
    assert len(recs) == 20
    meta = json.loads(recs[0]["json"])
    assert meta["codec"] == "vp9" and meta["frames"] == 8 and int(recs[0]["cls"]) < 12


def test_encoded_clip_matches_rendered_frames(synth):
    rec = _records(synth, "val")[2]
    with av.open(io.BytesIO(rec["webm"])) as c:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    cls, _, clip = synth_clip(7, "val", int(rec["__key__"]), 8, 32, SHAPES)
    assert cls == int(rec["cls"])
    assert np.abs(decoded.astype(int) - clip).mean() < 6  # yuv420p chroma only


def test_same_seed_same_set_other_seed_differs(synth, tmp_path):
    again = make_synthetic(
        tmp_path / "a", clips=20, val_clips=6, frames=8, size=32, seed=7, workers=2
    )
    other = make_synthetic(
        tmp_path / "b", clips=20, val_clips=6, frames=8, size=32, seed=8, workers=1
    )
    labels = [[int(r["cls"]) for r in _records(root, "train")] for root in (synth, again, other)]
    assert labels[0] == labels[1] != labels[2]
    assert [r["webm"] for r in _records(synth, "val")] == [
        r["webm"] for r in _records(again, "val")
    ]


def test_still_images_match_object_classes(synth):
    m = json.loads((synth / "manifest.json").read_text())
    for split, count in (("train", 20), ("val", 6)):
        folders = sorted(p.name for p in (synth / "images" / split).iterdir())
        assert folders == sorted(m["objects"]) == sorted(SHAPES)
        pngs = list((synth / "images" / split).glob("*/*.png"))
        assert len(pngs) == count
        assert Image.open(pngs[0]).size == (32, 32)


def test_objects_dir_supplies_object_classes(tmp_path):
    for name, colour in (("apple", (255, 0, 0, 255)), ("leaf", (0, 255, 0, 255))):
        (tmp_path / "obj" / name).mkdir(parents=True)
        Image.new("RGBA", (16, 16), colour).save(tmp_path / "obj" / name / "x.png")
    out = make_synthetic(
        tmp_path / "s",
        clips=6,
        val_clips=2,
        frames=4,
        size=32,
        seed=0,
        objects_dir=tmp_path / "obj",
        workers=1,
    )
    assert json.loads((out / "manifest.json").read_text())["objects"] == ["apple", "leaf"]
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == ["apple", "leaf"]


def test_synthetic_never_writes_into_a_foreign_directory(tmp_path):
    """An interrupted `shards build` leaves a tar and no manifest: it must stay untouched."""
    from data.config import DataConfig
    from data.loader import ensure_dataset

    root = tmp_path / "user-shards"
    root.mkdir()
    (root / "train-000000.tar").write_bytes(b"the user's clips")
    cfg = DataConfig(root=str(root), synthetic=True, synth_clips=4, frames=4)
    with pytest.raises(FileExistsError, match=str(root)):
        ensure_dataset(cfg, seed=0)
    with pytest.raises(FileExistsError, match=str(root)):
        make_synthetic(root, clips=4, val_clips=2, frames=4, size=16, workers=1)
    assert (root / "train-000000.tar").read_bytes() == b"the user's clips"
    assert sorted(p.name for p in root.iterdir()) == ["train-000000.tar"]
