"""One-line errors for `vivit train` and `vivit eval`: no traceback for what the user can fix.

A wrong config, a missing or unreadable file (shard manifest, spatial weights, checkpoint),
a checkpoint refused as unsafe or altered, or a class set that does not match print
`vivit CMD: message` and exit 2; a checkpoint that cannot be written (a full disk) prints one line and exits 1.
Anything else is a bug and keeps its traceback. `VIVIT_TRACEBACK=1` shows it for all.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_USAGE = 2
"""The input (config, paths, data, checkpoint) is wrong."""
EXIT_FAILED = 1
"""The run failed for a reason outside the input (e.g. the disk filled up)."""


def _usage_errors() -> tuple[type[BaseException], ...]:
    from core.ckpt_manifest import CheckpointError
    from core.configtools import ConfigError
    from core.evaluation_run import ClassSetError
    from core.spatial import WeightsError
    from data.cache_format import CacheError
    from data.manifest import ManifestError

    return (
        ConfigError,
        CacheError,  # a token cache that does not fit the run (names the field)
        CheckpointError,
        ClassSetError,
        WeightsError,
        ManifestError,
        FileNotFoundError,  # a manifest, weights file or checkpoint that is not there
        FileExistsError,  # out_dir is a file; a synthetic set into a foreign directory
        NotADirectoryError,
    )


def run_reported(prog: str, body: Callable[[], int], *, leave_group: bool = False) -> int:
    """`body()`, with the errors above reported as one line on stderr and an exit code;
    `leave_group`: this rank then leaves its process group, if it joined one
    (`core.engine.leave_group`), however `body` ended."""
    from core.checkpoint import CheckpointSaveError

    try:
        return body()
    except _usage_errors() as err:
        if os.environ.get("VIVIT_TRACEBACK"):
            raise
        print(f"{prog}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except CheckpointSaveError as err:
        if os.environ.get("VIVIT_TRACEBACK"):
            raise
        print(f"{prog}: {err}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if leave_group:
            from core.engine import leave_group as leave

            leave()
