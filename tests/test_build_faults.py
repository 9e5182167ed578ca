"""`vivit shards build` vets its label rows: paths outside --videos are refused unless allowed,
a still image named .mp4 is not a video, duplicate rows are built once and counted, and one
video under two labels is refused unless the user drops such videos."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from launch.shards import main as shards_main
from tests.data_helpers import index_frames, write_video


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    frames = index_frames(6)
    write_video(root / "videos" / "jump" / "a.webm", frames, "vp9")
    write_video(root / "videos" / "run" / "b.webm", frames, "vp9")
    write_video(root / "outside" / "x.webm", frames, "vp9")
    Image.new("RGB", (32, 32), (200, 30, 30)).save(root / "videos" / "run" / "still.mp4", "JPEG")
    return root


def _build(tree: Path, tmp: Path, rows: list[str], *flags: str) -> tuple[int, Path]:
    labels = tmp / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{r}\n" for r in rows))
    out = tmp / "shards"
    args = ["build", "--videos", str(tree / "videos"), "--labels", str(labels)]
    args += ["--format", "csv", "--out", str(out), "--codec", "vp9", "--workers", "1", *flags]
    return shards_main(args), out


def _report(out: Path) -> dict:
    return json.loads((out / "build-report.json").read_text())["splits"]["train"]


def test_rows_outside_videos_are_refused(tree: Path, tmp_path: Path, capsys) -> None:
    absolute = tree / "outside" / "y.webm"
    rows = ["jump/a.webm,jump", "../outside/x.webm,run", f"{absolute},run"]
    code, out = _build(tree, tmp_path, rows)
    err = capsys.readouterr().err
    assert code == 2
    assert "2 label row(s) point outside --videos" in err and "--allow-outside" in err
    assert "../outside/x.webm" in err and str(absolute) in err
    assert not out.exists(), "a refused label file must leave --out untouched"


def test_allow_outside_reads_them_and_reports_it(tree: Path, tmp_path: Path, capsys) -> None:
    rows = ["jump/a.webm,jump", "../outside/x.webm,run"]
    code, out = _build(tree, tmp_path, rows, "--allow-outside")
    assert code == 0
    assert "outside --videos (--allow-outside)" in capsys.readouterr().out
    assert _report(out)["outside_videos"] == [str(tree / "videos" / "../outside/x.webm")]
    assert json.loads((out / "manifest.json").read_text())["splits"]["train"]["count"] == 2


def test_still_image_named_mp4_is_skipped_and_reported(tree: Path, tmp_path: Path, capsys) -> None:
    code, out = _build(tree, tmp_path, ["jump/a.webm,jump", "run/still.mp4,run"])
    assert code == 0
    console = capsys.readouterr().out
    assert "skipped 1" in console and "still.mp4" in console and "--min-frames 2" in console
    skipped = _report(out)["skipped"]
    assert [s["path"].split("/")[-1] for s in skipped] == ["still.mp4"]
    assert "only 1 frame(s)" in skipped[0]["reason"]


def test_duplicate_rows_are_built_once_and_counted(tree: Path, tmp_path: Path, capsys) -> None:
    rows = ["jump/a.webm,jump", "jump/a.webm,jump", "jump/./a.webm,jump", "run/b.webm,run"]
    code, out = _build(tree, tmp_path, rows)
    assert code == 0
    assert "duplicates: 2 repeated label row(s) of 1 video(s)" in capsys.readouterr().out
    report = _report(out)
    assert report["duplicate_rows"] == 2 and report["written"] == 2
    assert report["duplicates"][0]["path"].endswith("jump/a.webm")


def test_one_video_under_two_labels_is_refused(tree: Path, tmp_path: Path, capsys) -> None:
    rows = ["jump/a.webm,jump", "jump/a.webm,run", "run/b.webm,run"]
    code, out = _build(tree, tmp_path, rows)
    err = capsys.readouterr().err
    assert code == 2 and "1 video(s) listed under more than one label" in err
    assert "a.webm: jump, run" in err and "--drop-conflicts" in err
    assert not out.exists()


def test_drop_conflicts_leaves_them_out(tree: Path, tmp_path: Path, capsys) -> None:
    rows = ["jump/a.webm,jump", "jump/a.webm,run", "run/b.webm,run"]
    code, out = _build(tree, tmp_path, rows, "--drop-conflicts")
    assert code == 0
    assert "left out" in capsys.readouterr().out
    report = _report(out)
    assert report["written"] == 1
    assert report["conflicts_dropped"][0]["labels"] == ["jump", "run"]
