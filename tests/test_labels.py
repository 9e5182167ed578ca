"""Label files: the csv `split` column, flip safety from direction words in every format, and
`--flip-pairs` from the command line through the manifest to the relabel at the flip."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from data.inspect import inspect_shards
from data.jobs import ClipJobs, flip_policy
from data.labels import (
    LabelFileError,
    direction_classes,
    flip_class_pairs,
    parse_flip_pairs,
    read_labels,
)
from launch.shards import main as shards_main
from tests.data_helpers import index_frames, write_video

MOTION = ["jump", "move_left", "move_right", "rotate_ccw", "rotate_cw"]


def _csv(tmp_path, text: str):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    return path


def test_csv_split_column_keeps_only_the_split_and_indexes_all_classes(tmp_path):
    labels = _csv(
        tmp_path,
        "path,label,split\na.mp4,run,train\nb.mp4,jump,val\nc.mp4,jump,train\nd.mp4,swim,val\n",
    )
    train = read_labels("csv", labels, tmp_path, split="train")
    assert [p.name for p, _ in train.items] == ["a.mp4", "c.mp4"]
    assert train.classes == ["jump", "run", "swim"]  # val's classes too: one index for all splits
    val = read_labels("csv", labels, tmp_path, split="val", known_classes=train.classes)
    assert [(p.name, c) for p, c in val.items] == [("b.mp4", "jump"), ("d.mp4", "swim")]
    with pytest.raises(LabelFileError, match=r"no rows of split 'test' \(splits here: \['train', 'val'\]\)"):  # fmt: skip
        read_labels("csv", labels, tmp_path, split="test")


def test_csv_without_split_column_takes_every_row(tmp_path):
    labels = _csv(tmp_path, "path,label\na.mp4,run\nb.mp4,jump\n")
    assert len(read_labels("csv", labels, tmp_path, split="val").items) == 2


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("path,label,split\na.mp4,run\n", r"labels\.csv:2: expected 3 fields"),
        ("path,label,split\na.mp4,run,\n", r"labels\.csv:2: empty split"),
        ("path,label,fold\na.mp4,run,1\n", r"labels\.csv:1: .*unknown columns \['fold'\]"),
    ],
)
def test_csv_split_column_errors_name_the_line(tmp_path, text, error):
    with pytest.raises(LabelFileError, match=error):
        read_labels("csv", _csv(tmp_path, text), tmp_path)


def _label_file(tmp_path, fmt: str, classes: list[str]):
    """A label file in `fmt` with one video per class (videos need not exist to read labels)."""
    if fmt == "csv":
        return _csv(tmp_path, "path,label\n" + "".join(f"{i}.mp4,{c}\n" for i, c in enumerate(classes)))  # fmt: skip
    if fmt == "kinetics-csv":
        path = tmp_path / "k.csv"
        rows = "".join(f"{c},id{i},0,10,train\n" for i, c in enumerate(classes))
        path.write_text("label,youtube_id,time_start,time_end,split\n" + rows)
        return path
    if fmt == "ssv2-json":
        path = tmp_path / "train.json"
        path.write_text(json.dumps([{"id": str(i), "label": c} for i, c in enumerate(classes)]))
        return path
    path = tmp_path / "trainlist01.txt"  # ucf101: Class/video.avi
    path.write_text("".join(f"{c}/v{i}.avi {i + 1}\n" for i, c in enumerate(classes)))
    return path


@pytest.mark.parametrize("fmt", ["csv", "kinetics-csv", "ssv2-json", "ucf101"])
def test_every_format_marks_direction_classes_flip_unsafe(tmp_path, fmt):
    unsafe = read_labels(fmt, _label_file(tmp_path, fmt, MOTION), tmp_path)
    assert unsafe.flip_safe is False and unsafe.flip_pairs == []
    safe_dir = tmp_path / "safe"
    safe_dir.mkdir()
    safe = ["jump", "pick_up", "sit_down", "swim"]  # vertical words survive a horizontal flip
    assert read_labels(fmt, _label_file(safe_dir, fmt, safe), safe_dir).flip_safe is True


def test_direction_words_are_whole_words():
    classes = ["Rotate CW", "turn-left", "rightsizing", "copyright", "lefty", "counter-clockwise"]
    assert direction_classes(classes) == ["Rotate CW", "turn-left", "counter-clockwise"]


def test_flip_pairs_match_words_phrases_and_class_names():
    classes = sorted(
        [
            "Pushing something from left to right",
            "Pushing something from right to left",
            "rotates clockwise",
            "rotates counter-clockwise",
            "move_left",
            "move_right",
            "jump",
        ]
    )
    pairs = flip_class_pairs(classes, parse_flip_pairs("left:right, clockwise:counter-clockwise"))
    named = {(classes[a], classes[b]) for a, b in pairs}
    assert named == {
        ("Pushing something from left to right", "Pushing something from right to left"),
        ("move_left", "move_right"),
        ("rotates clockwise", "rotates counter-clockwise"),
    }
    assert flip_class_pairs(classes, [("move_left", "move_right")]) == [
        [classes.index("move_left"), classes.index("move_right")]
    ]
    with pytest.raises(LabelFileError, match="cw:ccw: pairs no two classes"):
        flip_class_pairs(classes, [("left", "right"), ("cw", "ccw")])


@pytest.mark.parametrize("text", ["left", "left:left", "a:b:c", ",", "left:"])
def test_bad_flip_pairs_are_refused(text):
    with pytest.raises(LabelFileError, match="--flip-pairs"):
        parse_flip_pairs(text)


def test_unpaired_direction_class_is_noted(tmp_path):
    labels = _label_file(tmp_path, "csv", [*MOTION, "turn_left"])
    got = read_labels("csv", labels, tmp_path, flip_pairs=parse_flip_pairs("left:right,cw:ccw"))
    assert got.flip_safe is False and len(got.flip_pairs) == 2
    assert any("turn_left" in n for n in got.notes)


@pytest.fixture(scope="module")
def motion_shards(tmp_path_factory):
    """`vivit shards build --format csv --split train --flip-pairs left:right,cw:ccw` on a
    labels file that also holds val rows."""
    root = tmp_path_factory.mktemp("motion")
    videos = root / "videos"
    for i, _ in enumerate(MOTION):
        write_video(videos / f"{i}.webm", index_frames(4), "vp9")
    rows = "".join(f"{i}.webm,{c},train\n" for i, c in enumerate(MOTION))
    labels = root / "labels.csv"
    labels.write_text("path,label,split\n" + rows + "0.webm,jump,val\n")
    out = root / "shards"
    args = ["build", "--videos", str(videos), "--labels", str(labels), "--format", "csv",
            "--out", str(out), "--codec", "copy", "--workers", "1", "--split", "train",
            "--flip-pairs", "left:right,cw:ccw"]  # fmt: skip
    assert shards_main(args) == 0
    return out


def test_flip_pairs_reach_the_manifest_and_inspect(motion_shards, capsys):
    manifest = json.loads((motion_shards / "manifest.json").read_text())
    assert manifest["classes"] == MOTION and manifest["splits"]["train"]["count"] == 5
    assert manifest["flip_safe"] is False
    assert manifest["flip_pairs"] == [[1, 2], [3, 4]]
    summary = inspect_shards(motion_shards, decode_samples=0).summary
    assert summary["flip_pairs"] == [["move_left", "move_right"], ["rotate_ccw", "rotate_cw"]]
    capsys.readouterr()
    assert shards_main(["inspect", str(motion_shards), "--decode", "0"]) == 0
    out = capsys.readouterr().out
    assert "flip_safe=False" in out
    assert "move_left <-> move_right, rotate_ccw <-> rotate_cw" in out


def test_a_flipped_clip_is_relabelled_where_the_flip_is_decided(motion_shards):
    manifest = json.loads((motion_shards / "manifest.json").read_text())
    assert flip_policy("auto", manifest) == (False, [0, 1, 2, 3, 4])  # unsafe: auto never flips
    may_flip, flip_label = flip_policy("always", manifest)
    assert may_flip and flip_label == [0, 2, 1, 4, 3]
    jobs = SimpleNamespace(
        train=True, frames=4, sampling="uniform", stride=1, min_scale=0.5,
        may_flip=may_flip, flip_label=flip_label, repeats=1,
    )  # fmt: skip
    rng = np.random.default_rng(0)
    meta = {"frames": 4, "height": 32, "width": 48}
    seen = set()
    for _ in range(64):
        for label in range(len(MOTION)):
            [(_, (_, x0, _, x1))], (new,) = ClipJobs._views(jobs, meta, rng, label)
            mirrored = x0 > x1
            assert new == (flip_label[label] if mirrored else label)
            seen.add(mirrored)
    assert seen == {True, False}
