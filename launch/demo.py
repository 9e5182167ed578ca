"""`vivit demo`: time-to-accuracy of the frozen-spatial two-stage method vs full fine-tuning.

Builds the synthetic action set and pretrains a tiny spatial ViT (both cached under the
output directory, keyed on the options), then trains each arm, for each seed, as its own
`vivit train` processes, evaluating every run at several points of its training with the
same multi-view protocol. The result is top-1 against training time and against training
FLOPs (mean and spread over seeds), a table (final top-1 mean ± sd, training time, time to
reach full fine-tuning's final top-1) and the targets met or missed: `results.md`,
`results.json`, `results.png`. Every run is an MLflow run of one experiment in
`OUT/mlflow.db`: `mlflow ui --backend-store-uri sqlite:///OUT/mlflow.db`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launch.demo_report import write_report
from launch.demo_results import CLOCKS, aggregate, arm_seed_result, cache_figures, verdict
from launch.demo_stages import (
    Progress,
    StageFailed,
    log,
    run_cache_stage,
    run_stage,
    stage_flops_per_step,
    write_base_config,
)
from launch.recipes import (
    SPATIAL_KWARGS,
    SPATIAL_MODEL,
    Arm,
    Budget,
    Stage,
    base_overrides,
    budget_for,
    cache_key,
    demo_arms,
    describe,
)

EXPERIMENT = "vivit-demo"


def prepare_inputs(budget: Budget, cache_root: Path, seed: int) -> tuple[Path, Path]:
    """(shard dir, spatial weights), built once per option set and reused afterwards."""
    from common.atomic import atomic_path
    from data.synthetic import make_synthetic
    from launch.image_pretrain import PretrainConfig, pretrain

    cache = cache_root / cache_key(budget, seed)
    data_root, weights = cache / "synth", cache / "spatial.safetensors"
    if (data_root / "manifest.json").is_file():
        log(f"reusing shards {data_root}")
    else:
        log(f"building synthetic shards ({budget.clips} train / {budget.val_clips} val clips)")
        with atomic_path(data_root) as tmp:
            make_synthetic(
                tmp,
                clips=budget.clips,
                val_clips=budget.val_clips,
                frames=budget.video_frames,
                size=budget.size,
                seed=seed,
                images=budget.images,
            )
    if weights.is_file() and weights.with_suffix(".json").is_file():
        meta = json.loads(weights.with_suffix(".json").read_text())
        log(f"reusing spatial weights {weights} (image val top-1 {meta['val_top1']:.3f})")
    else:
        log(f"pretraining the spatial ViT on {data_root / 'images'}")
        pretrain(
            PretrainConfig(
                images=str(data_root / "images"),
                model=SPATIAL_MODEL,
                out=str(weights),
                img_size=budget.size,
                patch_size=budget.patch,
                model_kwargs=dict(SPATIAL_KWARGS),
                steps=budget.pretrain_steps,
                batch_size=budget.pretrain_batch,
                lr=budget.pretrain_lr,
                min_scale=0.35,
                seed=seed,
            ),
            log=log,
        )
    return data_root, weights


def tracking_uri(out: Path) -> str:
    """A SQLite store (MLflow 3.x refuses new file stores without an opt-out variable)."""
    return f"sqlite:///{(out / 'mlflow.db').resolve()}"


def ensure_experiment(uri: str, name: str, artifacts: Path) -> str:
    """Create the experiment with artifacts under the output dir (else they land in ./mlruns)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    artifacts.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(name, artifact_location=artifacts.resolve().as_uri())


def mlflow_run_names(uri: str, name: str) -> list[str]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r.info.run_name for r in runs]


def run_experiment(
    out: Path,
    quick: bool,
    seeds: list[int],
    experiment: str,
    arms_for: Callable[[Budget, Path], list[Arm]],
    title: str,
    baseline: str | None,
    command: str,
    data_seed: int = 0,
    clock: str = "wall",
    tracking: bool = True,
) -> dict[str, Any]:
    """Shared by demo and ablate: inputs once, then every arm for every seed, then the report."""
    from benchmarks.system import environment

    budget = budget_for(quick)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    env = environment(command.split()[1:])  # at the start: the commit the runs ran on
    env["command"] = command
    data_root, weights = prepare_inputs(budget, out / "cache", data_seed)
    from data.manifest import read_manifest

    num_classes = len(read_manifest(data_root)["classes"])
    uri = tracking_uri(out)
    if tracking:
        ensure_experiment(uri, experiment, out / "mlartifacts")
    per_seed: dict[int, dict[str, dict[str, Any]]] = {}
    cache_runs: list[dict[str, Any]] = []
    arms: list[Arm] = []
    for seed in seeds:
        seed_dir = out / f"seed{seed}"
        seed_dir.mkdir(parents=True, exist_ok=True)
        base_yaml = seed_dir / "base.yaml"
        overrides = base_overrides(
            budget, data_root.resolve(), weights.resolve(), seed, uri, experiment
        )
        if not tracking:
            overrides.append("tracking.enabled=false")
        write_base_config(base_yaml, overrides)
        runs_dir = (seed_dir / "runs").resolve()
        arms = arms_for(budget, runs_dir)
        summaries: dict[str, dict[str, Any]] = {}
        flops: dict[str, int] = {}
        for arm in arms:
            train_stages = [s for s in arm.stages if s.kind == "train"]
            progress = Progress(f"[seed {seed}] {arm.name}", sum(s.steps for s in train_stages))
            for stage in arm.stages:
                if stage.run in summaries:  # a stage shared by several arms runs once
                    progress.done_steps += stage.steps if stage.kind == "train" else 0
                    continue
                if stage.kind == "cache":
                    summaries[stage.run] = run_cache_stage(stage, base_yaml, runs_dir)
                else:
                    summaries[stage.run] = run_stage(
                        stage, base_yaml, runs_dir, f"{budget.name}/seed{seed}/", progress
                    )
                flops[stage.run] = stage_flops_per_step(base_yaml, stage, num_classes)
        per_seed[seed] = {arm.name: arm_seed_result(arm, summaries, flops, clock) for arm in arms}
        cache_runs += [summaries[s.run] | {"seed": seed} for s in _cache_stages(arms)]
    arm_results = aggregate(arms, per_seed, baseline)
    pretrain_meta = json.loads(weights.with_suffix(".json").read_text())
    result: dict[str, Any] = {
        "title": title,
        "command": command,
        "seeds": seeds,
        "arms": arm_results,
        "budget": describe(budget),
        "data_seed": data_seed,
        "clock": clock,
        "pretrain": {k: pretrain_meta[k] for k in ("val_top1", "steps", "train_s")},
        "tracking_uri": uri,
        "experiment": experiment,
        "mlflow_runs": sorted(mlflow_run_names(uri, experiment)) if tracking else [],
    }
    if baseline is not None:
        result["verdict"] = verdict(arm_results)
    if "two-stage" in arm_results and "two-stage-cached" in arm_results:
        result["cache"] = cache_figures(arm_results, cache_runs, budget)
    result["environment"] = env
    result["total_s"] = time.perf_counter() - t0
    write_report(out, result, baseline)
    print()
    print((out / "results.md").read_text())
    log(f"done in {result['total_s']:.0f}s: {out / 'results.md'}, results.json, results.png")
    return result


def _cache_stages(arms: list[Arm]) -> list[Stage]:
    found = {s.run: s for arm in arms for s in arm.stages if s.kind == "cache"}
    return list(found.values())


def build_parser(prog: str, default_out: str, what: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=what)
    p.add_argument("--quick", action="store_true", help="CI-sized smoke run (a few minutes)")
    p.add_argument(
        "--out",
        default=None,
        help=f"output dir (default {default_out}, -quick suffix with --quick)",
    )
    p.add_argument("--seeds", type=int, default=1, help="training seeds 0..N-1 (default 1)")
    p.add_argument(
        "--seed", type=int, default=0, help="first training seed (seeds are SEED..SEED+N-1)"
    )
    p.add_argument(
        "--data-seed", type=int, default=0, help="seed of the synthetic set and pretraining"
    )
    p.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="training time as wall-clock step time (default) or the process CPU time of the "
        "steps (steadier on a machine shared with other work)",
    )
    p.add_argument(
        "--no-tracking",
        action="store_true",
        help="no MLflow store (for machines without mlflow); results.{md,json,png} as usual",
    )
    return p


def run_command(
    argv: list[str],
    prog: str,
    default_out: str,
    description: str,
    experiment: str,
    arms: Callable[[Budget, Path], list[Arm]],
    title: str,
    baseline: str | None,
) -> int:
    """The shared CLI body of `vivit demo` and `vivit ablate`."""
    args = build_parser(prog, default_out, description).parse_args(argv)
    if args.seeds < 1:
        print(f"{prog}: --seeds must be >= 1", file=sys.stderr)
        return 2
    out = Path(args.out or (f"{default_out}-quick" if args.quick else default_out))
    seeds = list(range(args.seed, args.seed + args.seeds))
    # `kill` unwinds like Ctrl-C, so the running `vivit train` child is stopped too
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        run_experiment(
            out,
            args.quick,
            seeds,
            experiment,
            arms,
            title,
            baseline=baseline,
            command=" ".join([prog, *argv]),
            data_seed=args.data_seed,
            clock=args.clock,
            tracking=not args.no_tracking,
        )
    except StageFailed as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    return run_command(
        argv,
        "vivit demo",
        "runs/demo",
        "Time-to-accuracy of full fine-tuning, naive freezing, the spatial-only floor and "
        "the two-stage frozen-spatial method on the built-in synthetic action set; writes "
        "results.md/json/png and an MLflow store.",
        EXPERIMENT,
        demo_arms,
        "vivit demo: time to accuracy, frozen-spatial two-stage vs full fine-tuning",
        baseline="full",
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
