"""`vivit bench data` measures the recipe's stage-1 shape too: T/4 frames at 4x the clips per
batch, each clip from its own video and 4 clips per decoded video (`data.repeat_aug`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.data_bench import measure_data_throughput
from data.synthetic import make_synthetic


@pytest.mark.timeout(300)
def test_stage1_shape_is_measured_plain_and_repeated(tmp_path: Path) -> None:
    root = make_synthetic(tmp_path / "shards", clips=24, val_clips=4, frames=16, size=32, workers=1)
    result = measure_data_throughput(str(root), 8, 32, 4, 0.3, 1)
    assert result["stage1_frames"] == 2 and result["stage1_batch_size"] == 16
    assert result["dali_stage1_repeat_aug"] == 4
    plain, repeated = result["dali_stage1_clips_per_s"], result["dali_stage1_repeat_clips_per_s"]
    assert plain > 0 and repeated > 0
    assert result["stage1_repeat_over_plain"] == pytest.approx(repeated / plain)
