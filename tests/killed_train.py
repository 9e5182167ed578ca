"""`vivit train` that is killed with SIGKILL at a checkpoint boundary (tests of exact resume).

    VIVIT_KILL_AT_STEP=4 python tests/killed_train.py CONFIG.yaml [key=value ...]
    VIVIT_KILL_AT_STEP=4 deepspeed --num_gpus 2 tests/killed_train.py CONFIG.yaml [...]

Runs `launch/train.py` (what `vivit train` and the deepspeed launcher run) unchanged, except
that every rank sends itself SIGKILL as the checkpoint of step `VIVIT_KILL_AT_STEP` begins:
no handler, no `finally`, no flush. The newest complete checkpoint is then the one before,
`metrics.jsonl` already holds the steps after it, and the prefetch thread and the DataLoader
workers have read ahead of the last trained batch - what a resume has to get right.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import core.fit  # noqa: E402
from launch import train  # noqa: E402

KILL_AT = int(os.environ["VIVIT_KILL_AT_STEP"])
_save = core.fit._save


def _save_or_die(cfg, trainer, *args, **kwargs):
    if trainer.step == KILL_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return _save(cfg, trainer, *args, **kwargs)


core.fit._save = _save_or_die

if __name__ == "__main__":
    sys.exit(train.main())
