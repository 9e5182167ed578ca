"""Two CPU ranks under the real `deepspeed` launcher (gloo): ZeRO-2 keeps them identical."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launcher() -> str:
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or shutil.which(
        "deepspeed"
    )
    assert launcher, "the deepspeed launcher is not installed"
    return launcher


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def deepspeed_launch(
    script: str, *args: str, timeout: int = 600, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    cmd = [_launcher(), "--num_gpus", "2", "--master_port", str(_free_port()), script, *args]
    proc = subprocess.run(
        cmd, cwd=REPO, env=_env() | (env or {}), capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert proc.returncode == 0, (
            f"launcher failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def assert_ranks_identical(out: Path) -> list[dict]:
    """Both ranks trained on different batches and ended with the same trainable weights."""
    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world_size"] for i in infos] == [2, 2]
    assert infos[0]["losses"] != infos[1]["losses"], "ranks should have seen different batches"
    assert infos[0]["moved"] > 0
    weights = [load_file(str(out / f"rank{r}.safetensors")) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), f"ranks differ at {key}"
    return infos


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_two_ranks_zero2_end_identical(tmp_path: Path, mode: str) -> None:
    shm_before = _shm_buffers()
    deepspeed_launch("tests/dist_worker.py", str(tmp_path), f"mode={mode}", "engine.zero_stage=2")
    infos = assert_ranks_identical(tmp_path)
    assert all(i["zero_stage"] == 2 for i in infos)
    # CPU ranks all-reduce through gloo: DeepSpeed's shm kernel left 69 MB per rank per run
    # in /dev/shm, which filled it after a few test-suite runs (core/engine._skip_shm_comm_op)
    assert not any(i["shm_comm_op"] for i in infos)
    assert _shm_buffers() <= shm_before, "the run left DeepSpeed all-reduce buffers in /dev/shm"


def _shm_buffers() -> set[str]:
    shm = Path("/dev/shm")
    return {p.name for p in shm.glob("deepspeed_allreduce_buffer_*")} if shm.is_dir() else set()


@pytest.mark.slow
def test_two_nodes_without_ssh_end_identical(tmp_path: Path) -> None:
    """Two `deepspeed` launchers as two nodes (`--no_ssh --node_rank 0/1`, as the SLURM script
    runs them), one CPU rank each, meeting at 127.0.0.1: ZeRO-2 keeps them identical."""
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=1\nnode-b slots=1\n")  # names only: nobody ssh-es there
    port = str(_free_port())
    procs, logs = [], []
    for node in (0, 1):
        cmd = [_launcher(), "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(node)]
        cmd += ["--master_addr", "127.0.0.1", "--master_port", port]
        cmd += ["tests/dist_worker.py", str(tmp_path), "mode=frozen", "engine.zero_stage=2"]
        logs.append((tmp_path / f"node{node}.log").open("w"))
        procs.append(
            subprocess.Popen(
                cmd,
                cwd=REPO,
                env=_env(),
                stdout=logs[-1],
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a timeout stops its ranks too
            )
        )
    try:
        codes = [p.wait(timeout=900) for p in procs]
    finally:
        for p, log in zip(procs, logs, strict=True):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            log.close()
    for node, code in enumerate(codes):
        text = (tmp_path / f"node{node}.log").read_text()
        assert code == 0, f"node {node} failed:\n{text[-3000:]}"
    infos = assert_ranks_identical(tmp_path)
    assert all(i["zero_stage"] == 2 for i in infos)
    # each launcher started exactly one rank, on its own node
    assert [(i["node_rank"], i["local_size"], i["rank"]) for i in infos] == [(0, 1, 0), (1, 1, 1)]
