"""One optimiser micro-step of ViViT-FE: frozen spatial forward outside the engine, DeepSpeed
step over the trainable parts only."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from common.seeding import seed_torch
from core import engine as ds_engine
from core.freezing import freeze_spatial, trainable_module
from core.model import build_model
from core.optim import warmup_cosine
from core.params import count_params, param_groups
from core.spatial import SpatialTokens, state_sha256
from core.train_config import TrainConfig

if TYPE_CHECKING:
    from core.config import ExperimentConfig

__all__ = ["TrainConfig", "Trainer"]

log = logging.getLogger("vivit")


class Trainer:
    """Model + freezing + DeepSpeed engine, and one optimiser micro-step.

    In frozen mode the spatial transformer stays outside the engine: it runs under no_grad in
    the engine's half precision, and only adapter + temporal + head reach the optimiser.
    """

    def __init__(self, cfg: ExperimentConfig, num_classes: int) -> None:
        self.cfg = cfg
        self.rank, self.world_size = ds_engine.init_distributed()
        self.device = ds_engine.device()
        on_gpu = self.device.type == "cuda"
        self.ds_config = ds_engine.build_ds_config(
            cfg.engine,
            cfg.optim,
            cfg.train.micro_batch_size,
            cfg.train.grad_accum,
            on_gpu,
            world_size=self.world_size,
        )
        self.dtype = ds_engine.compute_dtype(self.ds_config)
        # identical initial weights on every rank (and dropout streams from the same seed)
        seed_torch(cfg.seed, "model-init")
        self.model = build_model(cfg, num_classes)
        self.frozen = cfg.mode == "frozen"
        # data.cache: the weights the cache must have been built with (before the half cast)
        self.spatial_sha256 = state_sha256(self.model.spatial) if cfg.data.cache else None
        if self.frozen:
            freeze_spatial(self.model, self.dtype)
            self.model.spatial.to(self.device)
        trainable = trainable_module(self.model, cfg.mode)
        trainable_n, frozen_n = count_params(self.model)
        self.param_counts = {"trainable_params": trainable_n, "frozen_params": frozen_n}
        groups = param_groups(
            trainable,
            weight_decay=cfg.optim.weight_decay,
            lr=cfg.optim.lr,
            spatial_lr_mult=cfg.optim.spatial_lr_mult,
            layer_decay=cfg.optim.layer_decay,
        )
        total = cfg.train.steps
        o = cfg.optim
        self.engine = ds_engine.build_engine(
            trainable,
            groups,
            self.ds_config,
            lambda step: warmup_cosine(step, o.warmup_steps, total, o.min_lr_ratio),
        )
        self.input_dtype = self.dtype
        self.step = 0

    def forward(self, frames: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Logits for `B×T×C×H×W` frames (grad flows only into the engine's module), or for
        cached spatial tokens `(B×T×D, B×T×N×D)` (`data.cache`: no spatial forward)."""
        if isinstance(frames, (tuple, list)):
            return self.engine(SpatialTokens(*(t.to(self.device) for t in frames)))
        frames = frames.to(self.device, self.input_dtype, non_blocking=True)
        if self.frozen:
            with torch.no_grad():
                tokens = self.model.spatial(frames)
            return self.engine(tokens)
        return self.engine(frames)

    def loss(self, frames: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss of a micro-batch, in training mode: `train_step`'s forward half
        (the benchmarks time it apart from the backward and the optimiser step)."""
        self.engine.train()
        logits = self.forward(frames)
        return torch.nn.functional.cross_entropy(
            logits.float(), labels.to(logits.device, non_blocking=True)
        )

    def train_step(self, frames: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """One micro-batch; DeepSpeed steps the optimiser at each accumulation boundary.

        Returns the loss as a 0-dim tensor on the device: reading it (`float()`) waits for the
        device, so the training loop does that only on logging steps.
        """
        loss = self.loss(frames, labels)
        self.engine.backward(loss)
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        if boundary:
            self.step += 1
        return loss.detach()

    def batch_norms(self) -> list[_BatchNorm]:
        """The trained model's BatchNorm layers (`temporal.head_norm=batch`)."""
        return [m for m in self.engine.module.modules() if isinstance(m, _BatchNorm)]

    def refresh_batch_norm(self, batches: list[tuple[Any, torch.Tensor]]) -> bool:
        """Recompute every BatchNorm's running statistics as the plain average over `batches`
        at the current weights (precise BN); False when the model has no BatchNorm.

        Training forwards (BatchNorm normalises by batch), under no_grad and with the random
        state put back afterwards, so the training run goes on exactly as without this.
        """
        norms = self.batch_norms()
        if not norms or not batches:
            return False
        momenta = [m.momentum for m in norms]
        devices = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                self.engine.train()
                for m in norms:
                    m.reset_running_stats()
                    m.momentum = None  # cumulative average over the batches
                for frames, _ in batches:
                    self.forward(frames)
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
        return True

    def eval_forward(self, frames: torch.Tensor) -> torch.Tensor:
        self.engine.eval()
        with torch.no_grad():
            return self.forward(frames)

    @property
    def lr(self) -> float:
        return float(max(self.engine.get_lr()))
