"""Exact resume under the real `vivit train` (issue 11 item 8): kill -9, resume=auto, same losses.

A run is killed with SIGKILL as its step-4 checkpoint begins (`tests/killed_train.py`): the
newest checkpoint is step 2, `metrics.jsonl` already logged steps 3-4, and the loader had read
ahead. Resumed with `resume=auto`, it must log for steps 3-6 exactly the losses (and final
validation loss) of an uninterrupted run with the same seed, with no duplicate rows: on one
rank and on two ranks under the `deepspeed` launcher, with 0 or 2 DataLoader workers and
prefetch depth 0 or 2 (CPU, fp32). The fast in-process version is `tests/test_resume_probe.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine_helpers import metrics_rows
from tests.test_distributed import deepspeed_launch
from tests.test_train_cli import tiny_args, vivit

REPO = Path(__file__).resolve().parent.parent
STEPS, CKPT_EVERY, KILL_AT = 6, 2, 4


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("synth")
    make_synthetic(
        root, clips=32, val_clips=8, frames=8, size=32, seed=0, codec="vp9", objects_dir=None
    )
    return root


def _args(shards: Path, out: Path, workers: int, prefetch: int) -> list[str]:
    return tiny_args(
        shards,
        out,
        f"train.steps={STEPS}",
        f"train.ckpt_every={CKPT_EVERY}",
        "train.log_every=1",
        f"data.workers={workers}",
        f"data.prefetch={prefetch}",
        "data.shuffle_buffer=8",
        "data.eval_clips=1",
        "tracking.enabled=false",
    )


def _train(ranks: int, args: list[str], kill_at: int | None = None) -> None:
    env = {} if kill_at is None else {"VIVIT_KILL_AT_STEP": str(kill_at)}
    if ranks == 2:
        script = "launch/train.py" if kill_at is None else "tests/killed_train.py"
        proc = deepspeed_launch(script, *args, check=kill_at is None, env=env)
        assert kill_at is None or proc.returncode != 0, "the killed run must not succeed"
        return
    if kill_at is None:
        vivit("train", *args)
        return
    proc = subprocess.run(
        [sys.executable, "tests/killed_train.py", *args],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == -9, f"expected SIGKILL, got {proc.returncode}:\n{proc.stderr[-3000:]}"


def _losses(run: Path) -> dict[int, tuple[float, float]]:
    rows = [r for r in metrics_rows(run) if "loss" in r]
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"duplicate rows in metrics.jsonl: steps {steps}"
    return {r["step"]: (r["loss"], r["lr"]) for r in rows}


@pytest.fixture(scope="module")
def reference(shards: Path, tmp_path_factory: pytest.TempPathFactory):
    """Uninterrupted runs, one per (ranks, workers); prefetch 0 (it does not change the data)."""
    runs: dict[tuple[int, int], Path] = {}

    def get(ranks: int, workers: int) -> Path:
        if (ranks, workers) not in runs:
            out = tmp_path_factory.mktemp(f"reference-{ranks}r-{workers}w") / "run"
            _train(ranks, _args(shards, out, workers, 0))
            runs[ranks, workers] = out
        return runs[ranks, workers]

    return get


def _check_resume_is_exact(
    shards: Path, reference, tmp_path: Path, ranks: int, workers: int, prefetch: int
) -> None:
    ref = reference(ranks, workers)
    out = tmp_path / "run"
    args = _args(shards, out, workers, prefetch)
    _train(ranks, args, kill_at=KILL_AT)
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["step_0000002"], checkpoints
    assert sorted(_losses(out)) == [1, 2, 3, 4], "the killed run had logged steps 3-4"

    _train(ranks, args)  # configs/tiny.yaml says resume: auto
    expected, got = _losses(ref), _losses(out)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert {s: got[s] for s in range(3, STEPS + 1)} == {s: expected[s] for s in range(3, STEPS + 1)}
    summary = json.loads((out / "summary.json").read_text())
    ref_summary = json.loads((ref / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["world_size"] == ranks
    assert summary["val_loss"] == ref_summary["val_loss"]
    assert summary["top1"] == ref_summary["top1"]


@pytest.mark.slow  # two or three `vivit train` processes each: 20-75 s on a 2-core CPU
@pytest.mark.parametrize("workers,prefetch", [(0, 0), (0, 2), (2, 0), (2, 2)])
def test_killed_run_resumes_exactly(
    shards: Path, reference, tmp_path: Path, workers: int, prefetch: int
) -> None:
    _check_resume_is_exact(shards, reference, tmp_path, 1, workers, prefetch)


@pytest.mark.distributed
@pytest.mark.slow
@pytest.mark.parametrize("workers,prefetch", [(0, 0), (0, 2), (2, 0), (2, 2)])
def test_killed_two_rank_run_resumes_exactly(
    shards: Path, reference, tmp_path: Path, workers: int, prefetch: int
) -> None:
    _check_resume_is_exact(shards, reference, tmp_path, 2, workers, prefetch)
