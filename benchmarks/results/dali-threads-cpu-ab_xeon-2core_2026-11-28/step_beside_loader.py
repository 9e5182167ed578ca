"""In one process: training steps fed by the real data path against steps on one fixed batch.

Run from the repository root (2026-11-28, commit a031498):
    OMP_NUM_THREADS=1 python step_beside_loader.py CONFIG.yaml [key=value ...]
with CONFIG the demo's stage-1 or full-fine-tuning run config (`runs/demo*/seed0/runs/*/`).
Four blocks of 25 steps each way, alternating; prints the median step times in ms. "step only"
leaves out the wait for the batch, so it shows what the decoding beside the step costs the step.
"""

import os
import statistics
import sys
import time

from core.config import load_config
from core.trainer import Trainer
from data.loader import open_train_batches, read_manifest
from launch.run import _data_kwargs


def main() -> None:
    overrides = [*sys.argv[2:], "out_dir=/tmp/step-beside-loader", "tracking.enabled=false"]
    cfg = load_config(sys.argv[1], overrides)
    trainer = Trainer(cfg, len(read_manifest(cfg.data.root)["classes"]))
    source = open_train_batches(
        cfg.data, batch_size=cfg.train.micro_batch_size, seed=cfg.seed, **_data_kwargs(cfg, trainer)
    )
    batches = iter(source.batches(0, None))
    fixed = next(batches)
    for _ in range(5):
        trainer.train_step(*next(batches))
    res: dict[str, list[float]] = {"data": [], "data_step_only": [], "fixed": []}
    for block in range(4):
        for _ in range(25):
            t0 = time.perf_counter()
            batch = next(batches)
            t1 = time.perf_counter()
            trainer.train_step(*batch)
            t2 = time.perf_counter()
            res["data"].append(t2 - t0)
            res["data_step_only"].append(t2 - t1)
        time.sleep(0.5)  # the prefetch queue fills; the decoder then idles during the fixed block
        for _ in range(25):
            t0 = time.perf_counter()
            trainer.train_step(*fixed)
            res["fixed"].append(time.perf_counter() - t0)
        print(block, {k: round(statistics.median(v[-25:]) * 1e3, 1) for k, v in res.items()})
    print("ALL", {k: round(statistics.median(v) * 1e3, 1) for k, v in res.items()})
    os._exit(0)  # the loader's threads and workers end with the process


if __name__ == "__main__":
    main()
