"""One owner for the checkpoint format: no module but `core.ckpt_format` spells its file names."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FORMAT_NAMES = {"model.safetensors", "meta.json", "step_"}
"""String constants that are the format's file names (plus anything starting `rng_rank`)."""


def test_only_ckpt_format_names_checkpoint_files() -> None:
    offenders = []
    for path in sorted((REPO / "core").glob("*.py")):
        if path.name == "ckpt_format.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) else None
            if isinstance(text, str) and (text in FORMAT_NAMES or text.startswith("rng_rank")):
                offenders.append(f"{path.name}:{node.lineno}: {node.value!r}")
    assert not offenders, "checkpoint file names outside core/ckpt_format.py: " + ", ".join(
        offenders
    )


def test_init_and_checkpoint_share_the_format() -> None:
    import core.checkpoint
    import core.ckpt_format
    import core.init

    assert core.init.find_checkpoint is core.ckpt_format.find_checkpoint
    assert core.init.read_checkpoint_weights is core.ckpt_format.read_checkpoint_weights
    assert core.checkpoint.checkpoint_name is core.ckpt_format.checkpoint_name
