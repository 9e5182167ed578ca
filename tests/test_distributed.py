"""Two CPU ranks under the real `deepspeed` launcher (gloo): ZeRO-2 keeps them identical."""

from __future__ import annotations

import json
import os
import shutil
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


def deepspeed_launch(
    script: str, *args: str, timeout: int = 600, check: bool = True, env: dict | None = None
) -> subprocess.CompletedProcess:
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent)) or shutil.which(
        "deepspeed"
    )
    assert launcher, "the deepspeed launcher is not installed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(env or {})}
    cmd = [launcher, "--num_gpus", "2", "--master_port", str(_free_port()), script, *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, (
            f"launcher failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_two_ranks_zero2_end_identical(tmp_path: Path, mode: str) -> None:
    deepspeed_launch("tests/dist_worker.py", str(tmp_path), f"mode={mode}", "engine.zero_stage=2")
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [i["world_size"] for i in infos] == [2, 2]
    assert all(i["zero_stage"] == 2 for i in infos)
    assert infos[0]["losses"] != infos[1]["losses"], "ranks should have seen different batches"
    assert infos[0]["moved"] > 0
    weights = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), f"ranks differ at {key}"
