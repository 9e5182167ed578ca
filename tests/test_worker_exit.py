"""DataLoader workers end when the trainer is killed (SIGKILL leaves no chance to stop them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SCENARIO = textwrap.dedent(
    """
    import os, signal, time
    import numpy as np, torch
    from data.fork import start_workers, worker_loader

    class Big(torch.utils.data.IterableDataset):
        def __iter__(self):
            while True:
                yield np.ones(1 << 20, np.uint8)  # 1 MB: more than a pipe holds

    items = start_workers(worker_loader(Big(), 2, prefetch_factor=4))
    next(items)
    print(" ".join(str(w.pid) for w in items._workers), flush=True)
    time.sleep(1.0)  # the workers fill their pipes
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _alive(pid: int) -> bool:
    """Running or stopped, not gone and not a zombie left for a reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_of_a_killed_trainer_end_and_release_its_pipes() -> None:
    try:
        proc = subprocess.run(
            [sys.executable, "-c", SCENARIO],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    except subprocess.TimeoutExpired as e:  # the workers held the pipes: end them, then fail
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        for pid in out.split():
            os.kill(int(pid), signal.SIGKILL)
        pytest.fail("the killed trainer's workers kept its stdout open for 60 s")
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "a worker outlived its trainer"
