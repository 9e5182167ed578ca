"""`vivit eval CONFIG.yaml checkpoint=DIR [key=value ...]`: multi-view top-1/top-5 of a checkpoint.

The checkpoint's weights are loaded through the same path as `temporal.init=checkpoint`
(trained parts from `model.safetensors`; frozen spatial weights from the file its meta names,
or from `model.safetensors` itself when the run had no weights file). The shard set must have
the checkpoint's classes; a mismatch, like a bad config or a missing file, is a one-line error
with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from launch.errors import run_reported
from launch.logging_setup import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vivit eval", description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument(
        "overrides", nargs="*", help="checkpoint=DIR (required) and a.b=value overrides"
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    setup_logging()
    ckpt = [o.split("=", 1)[1] for o in args.overrides if o.startswith("checkpoint=")]
    rest = [o for o in args.overrides if not o.startswith("checkpoint=")]
    if len(ckpt) != 1:
        print(
            "vivit eval: give exactly one checkpoint=DIR (a checkpoint or run directory)",
            file=sys.stderr,
        )
        return 2
    overrides = rest + [
        "temporal.init=checkpoint",
        f"temporal.checkpoint={ckpt[0]}",
        "temporal.load_spatial=true",
    ]
    return run_reported("vivit eval", lambda: _evaluate(args.config, overrides), leave_group=True)


def _evaluate(config: str, overrides: list[str]) -> int:
    from core.config import load_config
    from launch.run import evaluate_checkpoint

    result = evaluate_checkpoint(load_config(config, overrides))
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
