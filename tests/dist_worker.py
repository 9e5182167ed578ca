"""Run by `deepspeed --num_gpus 2 tests/dist_worker.py OUT_DIR [key=value ...]` in tests.

Each rank trains the tiny config on *different* batches (seeded by rank) and writes its
final trainable weights, so the test can check ZeRO kept the ranks identical.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from core import engine as ds_engine  # noqa: E402
from tests.engine_helpers import NUM_CLASSES, tiny_trainer  # noqa: E402
from tests.tensor_batches import TensorBatches  # noqa: E402


def _shm_comm_op_loaded() -> bool:
    import deepspeed.comm.comm as comm

    return getattr(comm.cdb, "shm_comm_op", None) is not None


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    out = Path(args[0])
    trainer = tiny_trainer(*args[1:])
    initial = {k: v.detach().float().clone() for k, v in trainer.engine.module.state_dict().items()}
    stream = TensorBatches(NUM_CLASSES, 4, 4, 32, seed=100 + trainer.rank).batches(0)
    losses = [float(trainer.train_step(*next(stream))) for _ in range(3)]
    final = ds_engine.trainable_state_dict(trainer.engine)
    save_file(
        {k: v.contiguous() for k, v in final.items()}, str(out / f"rank{trainer.rank}.safetensors")
    )
    moved = sum(not torch.equal(final[k], initial[k]) for k in final)
    (out / f"rank{trainer.rank}.json").write_text(
        json.dumps(
            {
                "world_size": trainer.world_size,
                "rank": trainer.rank,
                "node_rank": int(os.environ.get("CROSS_RANK", -1)),  # set by DeepSpeed's launcher
                "local_size": int(os.environ.get("LOCAL_SIZE", -1)),
                "losses": losses,
                "moved": moved,
                "zero_stage": trainer.engine.zero_optimization_stage(),
                "shm_comm_op": _shm_comm_op_loaded(),
            }
        )
    )


if __name__ == "__main__":
    main()
