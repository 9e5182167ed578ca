"""`vivit shards build` / `inspect` on real encoded videos for every label format."""

from __future__ import annotations

import json

import pytest
import webdataset as wds

from data.build import BuildOptions, build_shards
from data.inspect import inspect_shards
from data.labels import LabelFileError, read_labels
from launch.shards import main as shards_main
from tests.data_helpers import index_frames, write_truncated, write_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Four good clips (H.264 mp4 and VP9 webm), one truncated file; 'ghost' is never written."""
    root = tmp_path_factory.mktemp("videos")
    frames = index_frames(6)
    write_video(root / "jump" / "a1.mp4", frames, "h264")
    write_video(root / "jump" / "a2.webm", frames, "vp9")
    write_video(root / "run" / "b1.webm", frames, "vp9")
    write_video(root / "run" / "b2.mp4", frames[:4], "h264")
    write_truncated(root / "run" / "bad.mp4", frames)
    return root


ROWS = [
    ("jump/a1.mp4", "jump"),
    ("jump/a2.webm", "jump"),
    ("run/b1.webm", "run"),
    ("run/b2.mp4", "run"),
    ("run/bad.mp4", "run"),
    ("run/ghost.mp4", "run"),
]


def _read_back(out, split="train"):
    urls = sorted(str(p) for p in out.glob(f"{split}-*.tar"))
    return list(wds.WebDataset(urls, shardshuffle=False))


def _check_result(out, classes):
    report = json.loads((out / "build-report.json").read_text())
    skipped = {s["path"].split("/")[-1]: s["reason"] for s in report["splits"]["train"]["skipped"]}
    assert set(skipped) == {"bad.mp4", "ghost.mp4"}
    assert skipped["ghost.mp4"] == "missing file"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == classes
    assert manifest["splits"]["train"]["count"] == 4
    samples = _read_back(out)
    assert len(samples) == 4
    for s in samples:
        meta = json.loads(s["json"])
        assert int(s["cls"]) == classes.index(meta["label"])
        assert ("mp4" in s) != ("webm" in s)
        assert meta["codec"] == "vp9" and meta["width"] == 32
    frames = {
        json.loads(s["json"])["source"].split("/")[-1]: json.loads(s["json"])["frames"]
        for s in samples
    }
    assert frames["b2.mp4"] == 4 and frames["a1.mp4"] == 6
    assert inspect_shards(out).ok


def test_generic_csv(videos, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in ROWS))
    out = tmp_path / "shards"
    res = build_shards(
        videos, labels, "csv", out, options=BuildOptions(codec="vp9"), progress=False
    )
    assert res.written == 4
    _check_result(out, ["jump", "run"])


def test_ucf101_with_classind(videos, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 run\n2 jump\n")
    (lists / "trainlist01.txt").write_text("".join(f"{p} 1\n" for p, _ in ROWS))
    out = tmp_path / "shards"
    build_shards(
        videos,
        lists / "trainlist01.txt",
        "ucf101",
        out,
        options=BuildOptions(codec="vp9"),
        workers=2,
        progress=False,
    )
    _check_result(out, ["run", "jump"])  # index order from classInd.txt, not alphabetical


def test_kinetics_csv_matches_by_youtube_id(tmp_path):
    vids = tmp_path / "k"
    write_video(vids / "abc_000010_000020.mp4", index_frames(4), "h264")
    write_video(vids / "xyz_clip.webm", index_frames(4), "vp9")  # found by stem prefix
    labels = tmp_path / "k.csv"
    labels.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "dance,abc,10,20,train\nsing,xyz,0,10,train\nsing,zzz,0,10,train\ndance,qqq,1,2,val\n"
    )
    out = tmp_path / "shards"
    res = build_shards(
        vids, labels, "kinetics-csv", out, options=BuildOptions(codec="copy"), progress=False
    )
    assert res.written == 2 and [s["reason"] for s in res.skipped] == ["missing file"]
    codecs = sorted(json.loads(s["json"])["codec"] for s in _read_back(out))
    assert codecs == ["h264", "vp9"]  # copy keeps the streams


def test_ssv2_json_templates(tmp_path):
    vids = tmp_path / "v"
    write_video(vids / "1.webm", index_frames(4), "vp9")
    write_video(vids / "2.webm", index_frames(4), "vp9")
    labels = tmp_path / "train.json"
    labels.write_text(
        json.dumps(
            [
                {"id": "1", "template": "Pushing [something] from left to right", "label": "x"},
                {"id": "2", "template": "Lifting [something] up", "placeholders": ["cup"]},
            ]
        )
    )
    out = tmp_path / "shards"
    res = build_shards(
        vids, labels, "ssv2-json", out, options=BuildOptions(codec="copy"), progress=False
    )
    assert res.manifest["classes"] == [
        "Lifting something up",
        "Pushing something from left to right",
    ]
    assert res.manifest["flip_safe"] is False


def test_label_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("path,label,extra\na.mp4,x,1\n")
    with pytest.raises(LabelFileError, match=r"bad\.csv:1: .*unknown columns \['extra'\]"):
        read_labels("csv", bad, tmp_path)
    val = tmp_path / "val.csv"
    val.write_text("path,label\na.mp4,jump\nb.mp4,swim\n")
    with pytest.raises(LabelFileError, match=r"val\.csv:3: class 'swim'"):
        read_labels("csv", val, tmp_path, known_classes=["jump", "run"])


def test_cli_rerun_skips_complete_shards_and_strict(videos, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in ROWS))
    out = tmp_path / "shards"
    args = [
        "build",
        "--videos",
        str(videos),
        "--labels",
        str(labels),
        "--format",
        "csv",
        "--out",
        str(out),
        "--codec",
        "vp9",
        "--shard-size",
        "0.000001",
        "--workers",
        "1",
    ]
    assert shards_main(args) == 0
    assert len(list(out.glob("train-*.tar"))) == 4  # tiny shard size: one video per shard
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert shards_main(args) == 0
    assert "4 already in complete shards" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == mtimes
    assert shards_main(args + ["--strict"]) == 1
    assert shards_main(["inspect", str(out)]) == 0


def test_nothing_written_exits_nonzero(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nnope.mp4,a\n")
    assert (
        shards_main(
            [
                "build",
                "--videos",
                str(tmp_path),
                "--labels",
                str(labels),
                "--format",
                "csv",
                "--out",
                str(tmp_path / "o"),
                "--workers",
                "1",
            ]
        )
        == 1
    )


def test_inspect_fails_when_manifest_disagrees(videos, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{p},{lab}\n" for p, lab in ROWS[:3]))
    out = tmp_path / "shards"
    build_shards(videos, labels, "csv", out, options=BuildOptions(codec="vp9"), progress=False)
    assert inspect_shards(out).ok
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["count"] += 1
    manifest["splits"]["train"]["shards"].append({"name": "train-000009.tar", "count": 1})
    (out / "manifest.json").write_text(json.dumps(manifest))
    problems = " | ".join(inspect_shards(out).problems)
    assert "manifest says 4" in problems and "train-000009.tar" in problems
    assert shards_main(["inspect", str(out)]) == 1
