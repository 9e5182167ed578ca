"""Classify video files with a trained checkpoint, multi-view exactly as evaluation does.

The model is rebuilt from the checkpoint alone: the config in its `meta.json`, its trained
weights (`model.safetensors`, both checked against `sha256.json`), and in frozen mode the
spatial weights from the path the checkpoint pins, refused unless that file still has the pinned
sha256. Class names are the ones stored in the checkpoint at save time, not a shard directory.
Video files and decoders are `launch.predict`'s (the composition root of prediction): this
module takes the views already decoded and normalised, so `core/` never imports `data/`.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.ckpt_format import HEAD_WEIGHT, find_checkpoint, read_checkpoint_weights
from core.config import ExperimentConfig
from core.configtools import ConfigError, from_dict
from core.evaluate import multiview_logits
from core.model import build_model

log = logging.getLogger(__name__)


class PredictError(ValueError):
    """A checkpoint that cannot be used for prediction; the message says which file and why."""


@dataclass(frozen=True)
class ClassScore:
    index: int
    label: str
    prob: float


@dataclass(frozen=True)
class Prediction:
    """The top classes of one video (probabilities of the view-averaged logits)."""

    video: str
    views: int
    decoder: str
    top: list[ClassScore]


def checkpoint_config(meta: dict[str, Any], checkpoint: Path) -> ExperimentConfig:
    """The training config stored in `meta`, set to load every weight from `checkpoint`.

    `spatial.weights` is cleared: the spatial weights come from the checkpoint (full mode) or
    from the absolute path + sha256 it pins (frozen mode), never from the run's relative path.
    """
    data = copy.deepcopy(meta.get("config"))
    if not isinstance(data, dict):
        raise PredictError(f"checkpoint {checkpoint}: its meta.json holds no training config")
    data.setdefault("spatial", {})["weights"] = None
    data.setdefault("temporal", {}).update(
        init="checkpoint", checkpoint=str(checkpoint), load_spatial=True
    )
    try:
        return from_dict(ExperimentConfig, data)
    except ConfigError as err:
        raise PredictError(
            f"checkpoint {checkpoint}: its config does not fit this version ({err})"
        ) from None


def _check_spatial_source(meta: dict[str, Any], state: dict[str, torch.Tensor], ckpt: Path) -> None:
    if meta.get("mode") != "frozen" or meta.get("spatial_weights"):
        return
    if not any(k.startswith("spatial.") for k in state):
        raise PredictError(
            f"checkpoint {ckpt} was trained with a frozen spatial transformer that was randomly "
            "initialised (spatial.weights unset): those weights are stored nowhere, so the model "
            "cannot be rebuilt; train frozen runs from a spatial weights file"
        )


class CheckpointClassifier:
    """A checkpoint's model on one device, its class names and its evaluation views' geometry.

    Knows nothing of video files or decoders: `launch.predict` reads the views (`data/`) and
    hands them here normalised.
    """

    def __init__(self, checkpoint: str | Path, *, device: str | torch.device | None = None):
        try:
            self.checkpoint = find_checkpoint(checkpoint)
            state, self.meta = read_checkpoint_weights(self.checkpoint)
        except (FileNotFoundError, ValueError) as err:
            raise PredictError(str(err)) from None
        self.cfg = checkpoint_config(self.meta, self.checkpoint)
        if HEAD_WEIGHT not in state:
            raise PredictError(f"checkpoint {self.checkpoint}: no {HEAD_WEIGHT} in its weights")
        num_classes = int(state[HEAD_WEIGHT].shape[0])
        self.classes = self._classes(num_classes)
        _check_spatial_source(self.meta, state, self.checkpoint)
        del state
        try:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError as err:
            raise PredictError(f"device {device!r}: {err}") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise PredictError(f"device {device!r}: no CUDA GPU is available here")
        on_gpu = self.device.type == "cuda"
        self.dtype = torch.bfloat16 if on_gpu and torch.cuda.is_bf16_supported() else torch.float32
        try:
            model = build_model(self.cfg, num_classes)
        except (FileNotFoundError, ValueError) as err:
            raise PredictError(str(err)) from None
        self.model = model.to(self.device, self.dtype).eval()
        self.mean, self.std = tuple(model.spatial.mean), tuple(model.spatial.std)
        self.views = self.cfg.data.eval_clips * self.cfg.data.eval_crops

    def _classes(self, num_classes: int) -> list[str]:
        names = self.meta.get("classes")
        if names is None:
            log.warning(
                "checkpoint %s stores no class names (saved by an older version): "
                "classes are shown by index",
                self.checkpoint,
            )
            return [f"class {i}" for i in range(num_classes)]
        if not isinstance(names, list) or len(names) != num_classes:
            raise PredictError(
                f"checkpoint {self.checkpoint}: meta.json names "
                f"{len(names) if isinstance(names, list) else names!r} classes, "
                f"its classifier has {num_classes}"
            )
        return [str(n) for n in names]

    @torch.no_grad()
    def top(self, views: torch.Tensor, top_k: int = 5) -> list[ClassScore]:
        """Top-`top_k` classes of one video from its normalised `V×T×C×H×W` views (on any device,
        in any float dtype): softmax of the logits averaged over the views, as evaluation."""
        logits = multiview_logits(lambda x: self.model(x.to(self.device, self.dtype)), views[None])
        probs = logits[0].softmax(-1).cpu()
        values, indices = probs.topk(min(top_k, len(self.classes)))
        return [
            ClassScore(int(i), self.classes[int(i)], float(p))
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
