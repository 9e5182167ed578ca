"""Checks before a checkpoint is evaluated (`launch/run.py` runs the evaluation).

The shard set must have the checkpoint's class set: a classifier trained on other classes
scores nothing meaningful, so a mismatch is an error before any model is built.
"""

from __future__ import annotations

from typing import Any

from core.ckpt_format import head_classes


class ClassSetError(ValueError):
    """A checkpoint evaluated on shards with another class set; names both."""


def _names(classes: list[str], limit: int = 6) -> str:
    shown = ", ".join(classes[:limit])
    return f" ({shown}{', ...' if len(classes) > limit else ''})"


def check_class_set(checkpoint: Any, classes: list[str], root: Any) -> None:
    """Raise `ClassSetError` unless `classes` (the shard manifest's) are the checkpoint's: the
    same count as its classifier's rows and, where its meta records class names, the same names
    in the same order."""
    ckpt, rows, names = head_classes(checkpoint)
    classes = [str(c) for c in classes]
    if rows == len(classes) and (names is None or names == classes):
        return
    trained = f"{rows} classes" + (_names(names) if names else "")
    if names and rows == len(classes):
        trained = f"{rows} other classes" + _names(names)
    raise ClassSetError(
        f"checkpoint {ckpt} was trained on {trained}, but {root}/manifest.json has "
        f"{len(classes)} classes{_names(classes)}: evaluate it on shards with its class set "
        "(`vivit shards build --out` into the training set's directory keeps its class index)"
    )
