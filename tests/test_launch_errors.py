"""`launch.errors.run_reported`, the wrapper of every launcher command: an input error is one
line and exit 2, and the rank leaves its process group whatever the outcome."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.configtools import ConfigError
from launch.errors import EXIT_USAGE, run_reported


def test_input_error_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    def body() -> int:
        raise ConfigError("unknown key 'train.stepz' (did you mean 'train.steps'?)")

    assert run_reported("vivit train", body) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err == "vivit train: unknown key 'train.stepz' (did you mean 'train.steps'?)\n"


@pytest.mark.parametrize("fails", [False, True], ids=["returns", "raises"])
def test_the_rank_leaves_its_process_group(fails: bool) -> None:
    """In a child process: a group made inside the command is gone once the wrapper returns."""
    probe = (
        "import torch.distributed as dist\n"
        "from core.engine import init_distributed\n"
        "from launch.errors import run_reported\n"
        "def body():\n"
        "    init_distributed()\n"
        "    print('inside', dist.is_initialized())\n"
        f"    if {fails}:\n"
        "        raise FileNotFoundError('no such file: x.yaml')\n"
        "    return 0\n"
        "code = run_reported('vivit eval', body)\n"
        "print('after', dist.is_initialized(), 'exit', code)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "inside True" in proc.stdout, proc.stdout
    assert f"after False exit {EXIT_USAGE if fails else 0}" in proc.stdout, proc.stdout
