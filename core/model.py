"""ViViT Factorised Encoder: per-frame spatial ViT -> adapter -> temporal transformer -> head."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from torch import Tensor, nn

from core.adapter import Adapter, AdapterConfig, build_adapter
from core.init import init_temporal
from core.spatial import SpatialConfig, SpatialTokens, SpatialTransformer
from core.temporal import FrameMean, TemporalConfig, TemporalTransformer, build_temporal

if TYPE_CHECKING:
    from core.config import ExperimentConfig

NO_DECAY_SUFFIXES = ("pos_embed", "cls_token", "reg_token", "dist_token", "query")
"""Parameter names (last component) never weight-decayed, whatever their shape."""

log = logging.getLogger(__name__)


def _world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class FeatureNorm(nn.BatchNorm1d):
    """BatchNorm1d without affine in front of the classifier (`temporal.head_norm=batch`).

    With several data-parallel ranks the batch statistics are those of the global batch
    (a differentiable all-reduce, as SyncBatchNorm), so every rank normalises alike and the
    running statistics stay identical on all ranks. A global batch of one clip has no batch
    statistics: it is normalised with the running ones instead (without updating them),
    with a warning, rather than failing.
    """

    def __init__(self, width: int) -> None:
        super().__init__(width, affine=False)
        self._warned = False

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return super().forward(x)
        world = _world_size()
        count = x.shape[0] * world
        if count < 2:
            if not self._warned:
                log.warning(
                    "temporal.head_norm=batch with a batch of one clip: normalising with "
                    "running statistics (use batches >= 2 for the recipe)"
                )
                self._warned = True
            return F.batch_norm(x, self.running_mean, self.running_var, training=False)
        if world == 1:
            return super().forward(x)
        moments = torch.stack([x.mean(0), (x * x).mean(0)])
        moments = dist_nn.all_reduce(moments) / world
        mean, var = moments[0], (moments[1] - moments[0] ** 2).clamp_min(0.0)
        with torch.no_grad():
            self.num_batches_tracked += 1
            # momentum None: the cumulative average, as torch's BatchNorm (precise BN uses it)
            tracked = float(self.num_batches_tracked)
            momentum = self.momentum if self.momentum is not None else 1.0 / tracked
            self.running_mean.lerp_(mean.detach(), momentum)
            self.running_var.lerp_(var.detach() * count / (count - 1), momentum)
        return (x - mean) / torch.sqrt(var + self.eps)


class TemporalHead(nn.Module):
    """Everything after the spatial transformer: the part that trains when the spatial is frozen."""

    def __init__(
        self,
        adapter: Adapter,
        temporal: TemporalTransformer | FrameMean,
        num_classes: int,
        dropout: float = 0.0,
        head_norm: str = "none",
    ) -> None:
        super().__init__()
        self.adapter = adapter
        self.temporal = temporal
        # Batch statistics of the pooled feature, no affine (the head's weights scale it).
        self.head_norm = FeatureNorm(temporal.width) if head_norm == "batch" else nn.Identity()
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(temporal.width, num_classes)
        # Zero head (Scenic ViViT): logits start at 0, so a fresh head adds no noise to the loss.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def forward(self, tokens: SpatialTokens) -> Tensor:
        # A half-precision frozen spatial feeds a head that may train in another precision.
        cls, patches = tokens.to(self.dtype)
        frame_tokens = self.adapter(cls, patches)
        return self.head(self.head_drop(self.head_norm(self.temporal(frame_tokens))))

    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.rsplit(".", 1)[-1] in NO_DECAY_SUFFIXES}


class ViViTFE(nn.Module):
    """Late fusion: `temporal_head(spatial(frames))`, with the two parts separately trainable."""

    def __init__(self, spatial: SpatialTransformer, temporal_head: TemporalHead) -> None:
        super().__init__()
        self.spatial = spatial
        self.temporal_head = temporal_head

    @property
    def num_frames(self) -> int:
        return self.temporal_head.temporal.num_frames

    def forward(self, frames: Tensor) -> Tensor:
        """frames: B x T x C x H x W -> logits B x num_classes."""
        return self.temporal_head(self.spatial(frames))

    def no_weight_decay(self) -> set[str]:
        """Full names of embeddings/tokens that must not be decayed (norms and biases: by shape)."""
        spatial = {f"spatial.vit.{n}" for n in self.spatial.vit.no_weight_decay()}
        head = {f"temporal_head.{n}" for n in self.temporal_head.no_weight_decay()}
        own = {n for n, _ in self.named_parameters()}
        return (spatial | head) & own


def build_parts(
    spatial_cfg: SpatialConfig,
    adapter_cfg: AdapterConfig,
    temporal_cfg: TemporalConfig,
    num_frames: int,
    num_classes: int,
) -> ViViTFE:
    """The model from component configs, temporal transformer randomly initialised."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    spatial = SpatialTransformer(spatial_cfg)
    adapter = build_adapter(adapter_cfg, spatial.embed_dim)
    temporal = build_temporal(
        temporal_cfg,
        in_dim=spatial.embed_dim,
        num_frames=num_frames,
        spatial_heads=spatial.num_heads,
        reference_block=spatial.vit.blocks[-1],
    )
    head = TemporalHead(
        adapter,
        temporal,
        num_classes,
        dropout=temporal_cfg.head_dropout,
        head_norm=temporal_cfg.head_norm,
    )
    return ViViTFE(spatial, head)


def build_model(cfg: ExperimentConfig, num_classes: int) -> ViViTFE:
    """ViViT-FE for `cfg` (spatial weights loaded, temporal initialised per `cfg.temporal.init`).

    Freezing is separate (`core.freezing.freeze_spatial`): precision is the training mode's call.
    """
    model = build_parts(cfg.spatial, cfg.adapter, cfg.temporal, cfg.data.frames, num_classes)
    init_temporal(model, cfg.temporal)
    return model
