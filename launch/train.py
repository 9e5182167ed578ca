"""`vivit train CONFIG.yaml [key=value ...]`; also the script the `deepspeed` launcher runs:

deepspeed --num_gpus 8 launch/train.py configs/tiny.yaml train.steps=1000
deepspeed --hostfile launch/hostfile.example launch/train.py CONFIG.yaml ...
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file by the deepspeed launcher
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launch.errors import run_reported  # noqa: E402
from launch.logging_setup import setup_logging  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="vivit train",
        description="Train ViViT-FE (full fine-tuning or frozen spatial) on DeepSpeed.",
        epilog="Config keys with type, default and meaning: `vivit config [PREFIX]`; "
        "the resolved config: `vivit config --show CONFIG.yaml [key=value ...]`.",
    )
    parser.add_argument("config", help="experiment YAML (e.g. configs/tiny.yaml)")
    parser.add_argument(
        "overrides", nargs="*", help="a.b=value overrides, e.g. mode=full train.steps=100"
    )
    parser.add_argument(
        "--local_rank", type=int, default=None, help=argparse.SUPPRESS
    )  # deepspeed launcher
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    setup_logging()
    # SIGTERM (a scheduler's stop, the deepspeed launcher stopping its ranks) unwinds the run
    # like Ctrl-C: the MLflow run is ended as KILLED and the process exits 143.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        return run_reported("vivit train", lambda: _train(args), leave_group=True)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _train(args: argparse.Namespace) -> int:
    from core.config import load_config

    cfg = load_config(args.config, args.overrides)
    from launch.run import run_training

    summary = run_training(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        keys = (
            "mode",
            "top1",
            "top5",
            "steps",
            "step_time_median_s",
            "clips_per_s",
            "peak_mem_bytes",
        )
        print(json.dumps({k: summary[k] for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
