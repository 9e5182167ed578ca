"""`vivit bench decode --quick`: every decoder timed on the same videos, ratios written."""

from __future__ import annotations

import json
import math
from pathlib import Path

from benchmarks.cli import main
from benchmarks.decode_bench import quick_grid


def test_bench_decode_quick_writes_both_sides_and_their_ratios(tmp_path: Path) -> None:
    out = tmp_path / "res"
    assert main(["decode", "--quick", "--out", str(out)]) == 0
    section = json.loads((out / "results.json").read_text())["decode"]
    grid = quick_grid()
    assert section["dali"] == "dali-cpu"
    assert [(r["length"], r["frames"]) for r in section["rows"]] == [
        (n, t) for n in grid.lengths for t in grid.frames
    ]
    for row in section["rows"]:
        for key in ("dali_ms", "dali_cut_ms", "pyav_seek_ms", "pyav_from_start_ms"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert row["from_start_over_seek"] == row["pyav_from_start_ms"] / row["pyav_seek_ms"]
        assert row["dali_over_pyav_seek"] == row["dali_ms"] / row["pyav_seek_ms"]
        assert row["dali_over_dali_cut"] == row["dali_ms"] / row["dali_cut_ms"]
    assert [r["length"] for r in section["one_frame"]] == list(grid.lengths)
    for row in section["one_frame"]:
        assert row["dali_late_over_early"] == row["dali_late_ms"] / row["dali_early_ms"]
    md = (out / "results.md").read_text()
    assert "## Decoding a clip (`vivit bench decode`)" in md
    assert "| 128 | 8 |" in md and "last / first" in md and "cut to key-frame groups" in md
