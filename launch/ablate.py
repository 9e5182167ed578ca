"""`vivit ablate`: adapter (none/mlp/attn) x temporal init (random/image/stage-1), all frozen.

Same inputs, cache, MLflow store, seeds and report format as `vivit demo`; each cell is a
frozen run at T frames with the stage-2 step budget. The stage-1 column reuses one stage-1
run per seed (its time is counted in each of those rows, as the method pays it).
"""

from __future__ import annotations

import sys

from launch.demo import run_command
from launch.recipes import ablation_arms

EXPERIMENT = "vivit-ablate"


def main(argv: list[str]) -> int:
    return run_command(
        argv,
        "vivit ablate",
        "runs/ablate",
        "Adapter x temporal-initialisation grid of the frozen-spatial method on the built-in "
        "synthetic action set; writes results.md/json/png and an MLflow store.",
        EXPERIMENT,
        ablation_arms,
        "vivit ablate: adapter x temporal initialisation (frozen spatial)",
        baseline=None,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
