"""`vivit bench faults [--out DIR] [-k EXPR]`: re-run every fault of issue 11 and write the table.

Each fault is a row: what was done to the system, what it does now, and the tests that prove
it (pytest node ids of the repository's own fault tests, run in one pytest process). The
table `benchmarks/results/faults_<date>/faults.md` gives each row pass/FAIL from this run, so
the claim in "what the system does now" is checked every time the table is written.
Runs from a source checkout (the tests are not packaged); ~5-7 min on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Fault:
    item: str
    """Issue 11's number (`12c`: the third fault of item 12), or `E<n>` for faults added here."""
    fault: str
    """What was done to the system."""
    now: str
    """What the system does now (the claim the tests check)."""
    tests: tuple[str, ...]
    """`tests/test_x.py::test_name`; a name covers all of its parameters."""
    expect: str = "pass"
    """`pass`, or `xfail` for a fault known to be open (its test is marked xfail)."""


SAFETY = "tests/test_checkpoint_safety.py"
DATA = "tests/test_data_faults.py"
TRAIN = "tests/test_train_faults.py"
CLI = "tests/test_cli_errors.py"
BUILD = "tests/test_build_faults.py"

FAULTS: tuple[Fault, ...] = (
    Fault(
        "1",
        "A pickle with a malicious `__reduce__` planted in each file of a checkpoint "
        "(rng state, DeepSpeed model/optimizer states, weights, meta), with and without a "
        "rewritten sha256 manifest; resume, eval and temporal init load it",
        "Refused by name: the file no longer matches `sha256.json`; with a matching manifest "
        "the loaders themselves refuse it (JSON, safetensors, `torch.load(weights_only=True)`). "
        "The payload never runs",
        (
            f"{SAFETY}::test_checkpoint_holds_no_pickle_of_ours",
            f"{SAFETY}::test_changed_file_is_refused_by_its_digest",
            f"{SAFETY}::test_crafted_checkpoint_runs_no_code",
            f"{SAFETY}::test_eval_and_init_read_no_pickle",
        ),
    ),
    Fault(
        "2",
        "Records with `.cls` 999, -1, 4 (= class count) or `two` in the training and eval shards",
        "Skipped where they are read and counted (`bad_label_skipped` in metrics and "
        "summary.json); training runs all its steps",
        (
            f"{DATA}::test_out_of_range_labels_are_skipped_and_counted",
            f"{DATA}::test_eval_skips_out_of_range_labels",
            f"{TRAIN}::test_out_of_range_labels_do_not_stop_training",
        ),
    ),
    Fault(
        "3",
        "The only training shard is a 0-byte tar, a tar without members, or a tar without samples",
        "Fails fast with an error naming the shard (no busy loop); an empty shard beside good "
        "ones is skipped with a warning",
        (
            f"{DATA}::test_empty_only_train_shard_fails_fast",
            f"{DATA}::test_empty_shard_beside_good_ones_is_skipped",
            f"{DATA}::test_split_with_nothing_usable_is_an_error_not_a_hang",
        ),
    ),
    Fault(
        "4",
        "Record `.json` says 1920x1080 for a 32x32 clip; `frames` 1e12 / 0, negative sizes",
        "No crash: the crop comes from the decoded frame (DALI and PyAV); metadata out of sane "
        "bounds makes the record a bad record, skipped and counted",
        (
            f"{DATA}::test_metadata_larger_than_the_video_does_not_crash",
            f"{DATA}::test_metadata_bounds",
            f"{DATA}::test_out_of_bounds_metadata_is_skipped_and_counted",
        ),
    ),
    Fault(
        "5",
        "`tracking.uri` at a closed port and at a server that never answers",
        "MLflow calls run on a bounded background queue with short timeouts; the run warns, "
        "trains and writes summary.json in about its own time",
        (
            "tests/test_tracking.py::test_closed_port_does_not_block",
            "tests/test_tracking.py::test_server_that_never_answers_does_not_block",
            f"{TRAIN}::test_unreachable_tracking_server_does_not_hold_training",
        ),
    ),
    Fault(
        "6",
        "A shard set without a `val` split; an evaluation that fails after training",
        "Refused before the first step, naming the split, the config key and the manifest; "
        "the final checkpoint is saved before the final eval",
        (
            f"{TRAIN}::test_missing_val_split_fails_before_training",
            f"{TRAIN}::test_final_checkpoint_is_saved_before_the_final_eval",
        ),
    ),
    Fault(
        "7",
        "`data.synthetic=true` with `data.root` at a directory holding a user's "
        "`train-000000.tar` and no manifest",
        "Refused: synthetic data is never written into a non-empty directory that is not a "
        "synthetic set",
        ("tests/test_data_synthetic.py::test_synthetic_never_writes_into_a_foreign_directory",),
    ),
    Fault(
        "8",
        "Stop a run right after its step-2 checkpoint (an exception; SIGKILL as the step-4 "
        "checkpoint begins under the real `vivit train`, 0 or 2 workers, prefetch 0 or 2), "
        "resume with `resume=auto`, compare with an uninterrupted run (real loader)",
        "Exact: each checkpoint keeps every rank's data position (`data_rank{R}.json`: loader "
        "items consumed) and RNG states; the resumed loader replays its stream to there without "
        "decoding. Losses, val loss, top-1 and final weights equal the uninterrupted run's bit "
        "for bit (CPU fp32); `metrics.jsonl` drops the rows of the steps run again",
        (
            "tests/test_resume_probe.py::test_resume_through_the_loader_is_exact",
            "tests/test_resume_exact.py::test_killed_run_resumes_exactly",
            "tests/test_resume_data.py::test_batches_resumed_at_a_position_equal_the_"
            "uninterrupted_ones",
            "tests/test_resume_data.py::test_metrics_log_truncated_to_the_resumed_step",
            "tests/test_resume.py::test_resume_continues_exactly",
        ),
    ),
    Fault(
        "9",
        "Frozen mode without `spatial.weights` (random backbone): `vivit eval` of the final "
        "checkpoint vs the training-time eval",
        "The checkpoint carries the frozen backbone it was trained with (`spatial.*` in "
        "model.safetensors); eval reproduces val loss (1e-5), top-1 and top-5",
        ("tests/test_eval_checkpoint.py::test_eval_reproduces_training_eval_without_weights_file",),
    ),
    Fault(
        "10",
        "`vivit eval` of a 4-class checkpoint on a 3-class shard set; on a 4-class set with "
        "other class names",
        "Exit 2 with one line naming both class counts (and names where the checkpoint "
        "records them); no score",
        (
            "tests/test_eval_checkpoint.py::test_eval_on_another_class_count_is_an_error",
            "tests/test_eval_checkpoint.py::test_eval_on_other_class_names_is_an_error",
        ),
    ),
    Fault(
        "11a",
        "`shards build` label rows `../outside/x.webm` and an absolute path",
        "Refused (exit 2, rows listed, --out untouched) unless `--allow-outside`, which reads "
        "them and lists them in build-report.json",
        (
            f"{BUILD}::test_rows_outside_videos_are_refused",
            f"{BUILD}::test_allow_outside_reads_them_and_reports_it",
        ),
    ),
    Fault(
        "11b",
        "A JPEG named `still.mp4` in the label file",
        "Skipped and reported (console and build-report.json): 1 frame, fewer than "
        "`--min-frames` (default 2)",
        (f"{BUILD}::test_still_image_named_mp4_is_skipped_and_reported",),
    ),
    Fault(
        "11c",
        "The same (video, label) row three times (one spelt `jump/./a.webm`); one video under "
        "two labels",
        "Duplicates built once, counted in the console and build-report.json; conflicts "
        "refused (exit 2, listed) unless `--drop-conflicts`, which leaves them out and lists them",
        (
            f"{BUILD}::test_duplicate_rows_are_built_once_and_counted",
            f"{BUILD}::test_one_video_under_two_labels_is_refused",
            f"{BUILD}::test_drop_conflicts_leaves_them_out",
        ),
    ),
    Fault(
        "12a",
        "Disk full during a checkpoint save (the weights writer raises ENOSPC; torch's zip "
        "writer raises `[enforce fail at inline_container.cc]`)",
        "`CheckpointSaveError`: names the checkpoints folder, the free space there and the "
        "disk as full; the partial save is removed; `vivit train` prints it as one line, exit 1",
        (
            "tests/test_checkpoint_faults.py::test_disk_full_in_weights_writer_is_named",
            "tests/test_checkpoint_faults.py::test_disk_full_in_torch_zip_writer_is_named",
        ),
    ),
    Fault(
        "12b",
        "A `step_*.tmp` folder left by a killed save",
        "Ignored by `resume=auto`, removed at the next save or resume",
        (
            "tests/test_checkpoint_faults.py::test_stale_tmp_is_removed_at_next_save",
            "tests/test_checkpoint_faults.py::test_stale_tmp_is_removed_at_resume",
            "tests/test_resume.py::test_incomplete_checkpoint_is_ignored",
        ),
    ),
    Fault(
        "12c",
        "Malformed YAML (train and eval), a shard directory without manifest.json, a missing "
        "`spatial.weights` file",
        "One line on stderr naming the file (and line:column for YAML), exit 2, no traceback",
        (
            f"{CLI}::test_malformed_yaml",
            f"{CLI}::test_missing_manifest",
            f"{CLI}::test_missing_weights_file",
        ),
    ),
    Fault(
        "12d",
        "`vivit shards inspect` of a set with an undecodable video",
        "Lists the decode failure and exits 1",
        (
            "tests/test_shards_cli.py::test_inspect_exits_nonzero_on_decode_failures",
            "tests/test_shards_cli.py::test_inspect_of_a_good_set_exits_zero",
        ),
    ),
    Fault(
        "12e",
        "`vivit shards synth --clips -5`, `--val-clips 0`, `--frames 0`, `--frames 1`",
        "Refused with the reason, exit 2, nothing written",
        ("tests/test_shards_cli.py::test_synth_refuses_nonsense",),
    ),
    Fault(
        "12f",
        "`vivit train ... train.steps=0`",
        "Refused (exit 2, one line pointing to `vivit eval`); no run directory, no NaN",
        (f"{CLI}::test_zero_steps_is_refused",),
    ),
    Fault(
        "12g",
        "SIGTERM to `vivit train` mid-run",
        "The MLflow run ends as KILLED; the process exits 143",
        ("tests/test_run_lifecycle.py::test_sigterm_ends_the_mlflow_run_as_killed",),
    ),
    Fault(
        "12h",
        "`resume=auto` with `adapter.kind` and `optim.lr` changed",
        "Refused before anything is written, naming each key old -> new; config.yaml unchanged",
        ("tests/test_run_lifecycle.py::test_resume_refused_for_changed_config_keeps_config_yaml",),
    ),
    Fault(
        "E1",
        "`resume=auto` with more steps, other logging cadence and loader workers",
        "Continues (these keys may change on resume); config.yaml records the new values",
        ("tests/test_run_lifecycle.py::test_resume_with_operational_changes_continues",),
    ),
    Fault(
        "E2",
        "A file added to a checkpoint after the save (`ds/extra.pt`)",
        "Resume refuses it: not listed in sha256.json",
        (f"{SAFETY}::test_unlisted_file_is_refused",),
    ),
    Fault(
        "E3",
        "`spatial.weights` is not a weights file; manifest.json is not valid JSON; `out_dir` is "
        "a file; an override `optim.betas=[0.9,`; `vivit eval` of a path without a checkpoint",
        "One line naming the file or override, exit 2, no traceback",
        (
            f"{CLI}::test_unreadable_weights_file",
            f"{CLI}::test_invalid_manifest_json",
            f"{CLI}::test_out_dir_is_a_file",
            f"{CLI}::test_malformed_override_value",
            f"{CLI}::test_missing_checkpoint_for_eval",
        ),
    ),
    Fault(
        "E4",
        "Truncated video bytes and a record without `.json` in a training shard",
        "Skipped and counted (`corrupt_skipped`); the other records train",
        ("tests/test_data_loader.py::test_corrupt_records_are_skipped_and_counted",),
    ),
)


def _node_key(node: str) -> tuple[str, str]:
    path, name = node.split("::", 1)
    return path.removesuffix(".py").replace("/", "."), name


def _outcomes(junit: Path) -> dict[tuple[str, str], str]:
    """(module, test name with parameters) -> passed / failed / error / skipped / xfailed."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "xfailed" if child.get("type") == "pytest.xfail" else "skipped"
        out[(case.get("classname", ""), case.get("name", ""))] = outcome
    return out


def _matches(node: str, outcomes: dict[tuple[str, str], str]) -> list[str]:
    module, name = _node_key(node)
    return [
        outcome
        for (mod, case), outcome in outcomes.items()
        if mod == module and (case == name or case.startswith(name + "["))
    ]


def result_of(fault: Fault, outcomes: dict[tuple[str, str], str]) -> tuple[str, bool]:
    """(cell text, ok) for one fault from the run's test outcomes."""
    per_test = [(node, _matches(node, outcomes)) for node in fault.tests]
    missing = [node for node, found in per_test if not found]
    if missing:
        return f"FAIL (did not run: {', '.join(missing)})", False
    found = [o for _, got in per_test for o in got]
    if fault.expect == "xfail":
        head = _matches(fault.tests[0], outcomes)
        rest = [o for _, got in per_test[1:] for o in got]
        if all(o == "xfailed" for o in head) and all(o == "passed" for o in rest):
            return "open (known; probe xfails as expected)", True
        if all(o == "passed" for o in found):
            return "XPASS: fixed? move this row to pass", True
        return f"FAIL ({', '.join(sorted(set(found)))})", False
    if all(o == "passed" for o in found):
        return f"pass ({len(found)} test{'s' if len(found) > 1 else ''})", True
    bad = sum(1 for o in found if o != "passed")
    return f"FAIL ({bad}/{len(found)} tests: {', '.join(sorted(set(found)))})", False


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "") if head else "unknown"
    except OSError:
        return "unknown"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_table(
    path: Path,
    faults: tuple[Fault, ...],
    outcomes: dict[tuple[str, str], str],
    wall_s: float,
) -> bool:
    """Write `faults.md`; True when every row holds."""
    import torch

    rows, all_ok, counts = [], True, {"pass": 0, "open": 0, "FAIL": 0}
    for f in faults:
        cell, ok = result_of(f, outcomes)
        all_ok &= ok
        counts["FAIL" if not ok else "open" if f.expect == "xfail" else "pass"] += 1
        tests = "<br>".join(f"`{t.split('/')[-1]}`" for t in f.tests)
        rows.append(
            f"| {f.item} | {_cell(f.fault)} | {_cell(f.now)} | {tests} | **{_cell(cell)}** |"
        )
    lines = [
        f"# Fault table (issue 11), {dt.date.today().isoformat()}",
        "",
        "Regenerate: `vivit bench faults` from a source checkout (runs the tests named below "
        "in one pytest process and rewrites this file).",
        "",
        f"- commit `{_git_commit()}`; Python {platform.python_version()}, torch "
        f"{torch.__version__}; {os.cpu_count()} CPU core(s) visible; wall {wall_s:.0f} s",
        f"- {len(faults)} faults: {counts['pass']} pass, {counts['open']} known open (not fixed "
        f"here, its probe fails as expected), {counts['FAIL']} FAIL",
        "",
        "| # | fault | what the system does now | tests | result |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return all_ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vivit bench faults", description=__doc__.splitlines()[0])
    p.add_argument(
        "--out",
        type=Path,
        default=REPO / "benchmarks" / "results" / f"faults_{dt.date.today().isoformat()}",
        help="folder for faults.md (default benchmarks/results/faults_<date>)",
    )
    p.add_argument("-k", dest="only", help="keep rows whose item or fault text contains this")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    if not (REPO / "tests").is_dir():
        print("vivit bench faults: run it from a source checkout (needs tests/)", file=sys.stderr)
        return 2
    faults = tuple(
        f for f in FAULTS if not args.only or args.only in f.item or args.only in f.fault
    )
    nodes = sorted({t for f in faults for t in f.tests})
    junit = args.out / ".faults-junit.xml"
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["MLFLOW_TRACKING_URI"] = ""
    print(f"vivit bench faults: {len(faults)} faults, {len(nodes)} tests -> {args.out}")
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEX"]
    subprocess.run([*cmd, f"--junitxml={junit}", *nodes], cwd=REPO, env=env)
    wall = time.perf_counter() - t0
    if not junit.is_file():
        print("vivit bench faults: pytest wrote no report", file=sys.stderr)
        return 1
    ok = write_table(args.out / "faults.md", faults, _outcomes(junit), wall)
    junit.unlink()
    print(f"wrote {args.out / 'faults.md'} ({'all rows hold' if ok else 'SOME ROWS FAIL'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
