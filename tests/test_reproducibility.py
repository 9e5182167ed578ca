"""Same seed, same numbers: in every process, whatever `PYTHONHASHSEED` says.

Every random stream derives from (seed, purpose, rank, worker, step) through
`numpy.random.SeedSequence` (`common.seeding`); Python's salted `hash()` of strings never is.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.seeding import int_seed, numpy_rng, purpose_key, python_rng
from tests.test_train_cli import tiny_args

REPO = Path(__file__).resolve().parent.parent

_STREAM_KEYS = """
import itertools, json, sys
from data.manifest import read_manifest, split_shards
from data.stream import ShardStream
root = sys.argv[1]
shards = split_shards(read_manifest(root), root, "train")
out = {}
for resample in (True, False):
    s = ShardStream(shards, rank=1, world=2, seed=3, start_step=5, resample=resample,
                    shuffle_buffer=6, epochs=None if resample else 2)
    out[str(resample)] = [x["__key__"] for x in itertools.islice(iter(s), 40) if "__key__" in x]
from common.seeding import int_seed
out["seed"] = int_seed(3, "augment", 1, 2, 0, 1, 5)
print(json.dumps(out))
"""


def _child(code: str, hashseed: str, *args: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": hashseed, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_streams_are_named_by_purpose_and_keys() -> None:
    assert purpose_key("shuffle") == purpose_key("shuffle") != purpose_key("augment")
    assert int_seed(0, "shuffle", 1, 2) == int_seed(0, "shuffle", 1, 2)
    distinct = {
        int_seed(0, "shuffle", 1, 2),
        int_seed(1, "shuffle", 1, 2),
        int_seed(0, "augment", 1, 2),
        int_seed(0, "shuffle", 2, 1),
        int_seed(0, "shuffle", 1, 2, 0),
    }
    assert len(distinct) == 5
    a, b = numpy_rng(7, "x", 1).random(4), numpy_rng(7, "x", 1).random(4)
    assert (a == b).all()
    assert python_rng(7, "x").random() == python_rng(7, "x").random()
    with pytest.raises(ValueError):
        int_seed(-1, "x")


def test_shard_stream_order_does_not_depend_on_pythonhashseed(tmp_path: Path) -> None:
    from tests.data_helpers import write_shard_set

    n = itertools.count()
    shards = [
        [(f"k{next(n):04d}", {"cls": b"0", "json": b"{}", "webm": b"x"}) for _ in range(5)]
        for _ in range(4)
    ]
    root = write_shard_set(tmp_path, {"train": shards}, ["a"])
    first, second = (_child(_STREAM_KEYS, h, str(root)) for h in ("1", "2"))
    assert json.loads(first)["True"], "the resampled stream yielded nothing"
    assert first == second


@pytest.mark.slow
def test_train_losses_identical_across_processes_and_hash_seeds(tmp_path: Path) -> None:
    """Two `vivit train` processes, same seed, different PYTHONHASHSEED: same logged losses."""
    from data.synthetic import make_synthetic

    shards = make_synthetic(tmp_path / "synth", clips=48, val_clips=16, frames=8, size=32)
    runs = []
    for hashseed in ("1", "2"):
        out = tmp_path / f"run-{hashseed}"
        env = {**os.environ, "PYTHONHASHSEED": hashseed, "OMP_NUM_THREADS": "1"}
        env["MLFLOW_TRACKING_URI"] = ""
        args = tiny_args(shards, out, "train.log_every=1", "data.shuffle_buffer=16")
        proc = subprocess.run(
            [sys.executable, "-m", "launch.cli", "train", *args, "tracking.enabled=false"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        lines = (out / "metrics.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines]
        runs.append(
            (
                [(r["step"], r["loss"]) for r in records if "loss" in r],
                [r["top1"] for r in records if r.get("event") == "eval"],
            )
        )
    (losses_a, top1_a), (losses_b, top1_b) = runs
    assert [s for s, _ in losses_a] == list(range(1, 7))
    assert losses_a == losses_b
    assert top1_a == top1_b
