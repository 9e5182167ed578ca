"""One log format for every entry point; non-zero ranks only warn."""

from __future__ import annotations

import logging
import os
import warnings


def setup_logging() -> None:
    rank = int(os.environ.get("RANK", "0"))
    level = logging.INFO if rank == 0 else logging.WARNING
    logging.basicConfig(
        level=level, format=f"%(asctime)s [rank{rank}] %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("DeepSpeed", "deepspeed", "torch.distributed", "mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
