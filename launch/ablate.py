"""`vivit ablate`: adapter (none/mlp/attn) x temporal init (random/image/stage-1), all frozen.

Same inputs, cache, MLflow store and report format as `vivit demo`; each cell is a frozen
run at T frames with the stage-2 step budget. The stage-1 column reuses one stage-1 run (its
time is counted in each of those rows, as the method pays it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from launch.demo import StageFailed, build_parser, run_experiment
from launch.recipes import ablation_arms

EXPERIMENT = "vivit-ablate"


def main(argv: list[str]) -> int:
    args = build_parser(
        "vivit ablate",
        "runs/ablate",
        "Adapter x temporal-initialisation grid of the frozen-spatial method on the built-in "
        "synthetic action set; writes results.md/json/png and an MLflow store.",
    ).parse_args(argv)
    out = Path(args.out or ("runs/ablate-quick" if args.quick else "runs/ablate"))
    try:
        run_experiment(
            out,
            args.quick,
            args.seed,
            EXPERIMENT,
            ablation_arms,
            "vivit ablate: adapter x temporal initialisation (frozen spatial)",
            baseline=False,
        )
    except StageFailed as err:
        print(f"vivit ablate: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
