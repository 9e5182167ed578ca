"""`launch/slurm_train.sh` under a fake SLURM (env vars, `scontrol`, `srun`, `deepspeed` stubs):
the hostfile, the master address and every node's `deepspeed --no_ssh --node_rank` command."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "launch" / "slurm_train.sh"
ARGS = ["configs/tiny.yaml", "out_dir=runs/my run", "train.steps=10"]


def _stub(path: Path, body: str) -> None:
    path.write_text(body)
    path.chmod(0o755)


@pytest.fixture
def fake_slurm(tmp_path: Path) -> dict[str, str]:
    """PATH with `scontrol` (two hosts), `srun` (runs its task once per node, as
    `--ntasks-per-node=1` does) and `deepspeed` (records its arguments) stubs, and a job's env."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(
        bin_dir / "scontrol",
        '#!/usr/bin/env bash\n[[ "$1 $2 $3" == "show hostnames gpu-[07-08]" ]] || exit 3\n'
        "printf 'gpu-07\\ngpu-08\\n'\n",
    )
    _stub(
        bin_dir / "srun",
        "#!/usr/bin/env bash\nwhile [[ $1 == --* ]]; do shift; done\n"
        'for id in 0 1; do SLURM_NODEID=$id "$@" || exit $?; done\n',
    )
    _stub(
        bin_dir / "deepspeed",
        f"#!{sys.executable}\nimport json, os, sys\n"
        "with open(os.environ['FAKE_DS_LOG'], 'a') as f:\n"
        "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n",
    )
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "gpu-[07-08]",
        "SLURM_JOB_ID": "42",
        "SLURM_SUBMIT_DIR": str(tmp_path),
        "SLURM_GPUS_ON_NODE": "4",
        "MASTER_PORT": "29600",
        "FAKE_DS_LOG": str(tmp_path / "deepspeed.jsonl"),
    }


def node_command(node: int, hostfile: Path) -> list[str]:
    return [
        *("--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(node)),
        *("--master_addr", "gpu-07", "--master_port", "29600", "launch/train.py", *ARGS),
    ]


def run_script(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *ARGS], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_runs_one_no_ssh_launcher_per_node(fake_slurm: dict[str, str], tmp_path: Path) -> None:
    proc = run_script(fake_slurm)
    assert proc.returncode == 0, proc.stderr
    hostfile = tmp_path / "hostfile.42"
    assert hostfile.read_text() == "gpu-07 slots=4\ngpu-08 slots=4\n"
    calls = [json.loads(line) for line in (tmp_path / "deepspeed.jsonl").read_text().splitlines()]
    assert calls == [node_command(0, hostfile), node_command(1, hostfile)]


def test_dry_run_prints_and_runs_nothing(fake_slurm: dict[str, str], tmp_path: Path) -> None:
    proc = run_script({**fake_slurm, "VIVIT_DRY_RUN": "1"})
    assert proc.returncode == 0, proc.stderr
    hostfile = tmp_path / "hostfile.42"
    assert not hostfile.exists() and not (tmp_path / "deepspeed.jsonl").exists()
    out = proc.stdout
    assert f"# would write {hostfile}:\n#   gpu-07 slots=4\n#   gpu-08 slots=4\n" in out
    srun = next(line for line in out.splitlines() if line.startswith("srun "))
    assert shlex.split(srun)[-len(ARGS) :] == ARGS
    for node in (0, 1):
        lines = out.splitlines()
        at = lines.index(f"# node {node} ({'gpu-07' if node == 0 else 'gpu-08'}) runs:")
        assert shlex.split(lines[at + 1]) == ["deepspeed", *node_command(node, hostfile)]


def test_outside_slurm_is_a_clear_error(fake_slurm: dict[str, str]) -> None:
    env = {k: v for k, v in fake_slurm.items() if k != "SLURM_JOB_NODELIST"}
    proc = run_script(env)
    assert proc.returncode != 0 and "not inside a SLURM job" in proc.stderr
    assert not Path(fake_slurm["FAKE_DS_LOG"]).exists()
