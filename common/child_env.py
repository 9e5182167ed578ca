"""The environment of a child `python -m ...` process the project starts (a demo stage, a
benchmark worker, a `vivit` step of a check): it imports this checkout first, whatever an
installed copy of the package says."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def checkout_env(**extra: str) -> dict[str, str]:
    """`os.environ` with this checkout first on `PYTHONPATH`, and `extra` set on top."""
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **extra}
