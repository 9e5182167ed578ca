"""Frozen mode on the real DeepSpeed engine: the spatial transformer gets no gradient and no
optimizer state, stays bit-identical, and everything trainable learns; ZeRO stages 1-3."""

from __future__ import annotations

import math

import pytest
import torch

from core.engine import clip_one_rank, leave_group, reduces_nothing
from tests.engine_helpers import NUM_CLASSES, tiny_trainer
from tests.tensor_batches import TensorBatches


def _optimizer_param_ids(trainer) -> set[int]:
    """Ids of the model parameters DeepSpeed's optimizer holds state for."""
    opt = trainer.engine.optimizer
    groups = getattr(opt, "bit16_groups", None) or getattr(opt, "fp16_groups", None)
    if groups is None:  # ZeRO-3 keeps flat partitions; fall back to the wrapped module
        return {id(p) for p in trainer.engine.module.parameters()}
    return {id(p) for group in groups for p in group}


def _run(trainer, steps: int) -> list[float]:
    source = TensorBatches(NUM_CLASSES, 4, 4, 32, seed=1)
    stream = source.batches(0)
    return [float(trainer.train_step(*next(stream))) for _ in range(steps)]


@pytest.mark.parametrize("zero_stage", [1, 2, 3])
def test_frozen_spatial_untouched_and_outside_optimizer(zero_stage: int) -> None:
    trainer = tiny_trainer("mode=frozen", "adapter.kind=attn", f"engine.zero_stage={zero_stage}")
    spatial = trainer.model.spatial
    before = {k: v.clone() for k, v in spatial.state_dict().items()}
    head_before = {k: v.detach().clone() for k, v in trainer.model.temporal_head.named_parameters()}
    losses = _run(trainer, 4)

    assert all(math.isfinite(x) for x in losses)
    assert trainer.engine.zero_optimization_stage() == zero_stage
    for key, value in spatial.state_dict().items():
        assert torch.equal(value, before[key]), f"frozen weight {key} changed"
    assert all(p.grad is None and not p.requires_grad for p in spatial.parameters())
    assert not spatial.training, "frozen spatial must stay in eval mode"
    spatial_ids = {id(p) for p in spatial.parameters()}
    assert not spatial_ids & _optimizer_param_ids(trainer)
    assert not any(id(p) in spatial_ids for p in trainer.engine.module.parameters())
    if zero_stage < 3:  # under ZeRO-3 parameters are partitioned placeholders
        changed = [
            n
            for n, p in trainer.model.temporal_head.named_parameters()
            if not torch.equal(p.detach(), head_before[n])
        ]
        assert len(changed) == len(head_before), "every trainable parameter should have moved"
    assert trainer.param_counts["frozen_params"] == sum(p.numel() for p in spatial.parameters())


def test_full_mode_trains_spatial_at_its_own_lr() -> None:
    trainer = tiny_trainer("mode=full", "optim.spatial_lr_mult=0.1")
    before = {k: v.clone() for k, v in trainer.model.spatial.state_dict().items()}
    losses = _run(trainer, 3)
    assert all(math.isfinite(x) for x in losses)
    moved = [
        k for k, v in trainer.model.spatial.state_dict().items() if not torch.equal(v, before[k])
    ]
    assert moved, "full mode must update the spatial transformer"
    assert trainer.param_counts["frozen_params"] == 0
    lrs = {g["name"]: g["lr"] for g in trainer.engine.optimizer.param_groups}
    assert lrs["spatial_decay"] == pytest.approx(0.1 * lrs["head_decay"])


def test_one_rank_fp32_stage_0_trains_as_zero_2_does() -> None:
    """The 1-rank stage-0 default changes the cost of a step, not what it computes.

    Without the head's BatchNorm: its output ignores a shift of its input, so the bias of the
    norm before it gets a gradient of pure rounding noise, which Adam scales up to a step of
    ±lr whose sign differs with the summation order (ZeRO's flat buffer against per-tensor
    gradients; it differed by 1e-3 on an AVX-512 CPU).
    """
    auto = tiny_trainer("mode=frozen", "adapter.kind=attn", "temporal.head_norm=none")
    zero2 = tiny_trainer(
        "mode=frozen", "adapter.kind=attn", "temporal.head_norm=none", "engine.zero_stage=2"
    )
    assert (auto.engine.zero_optimization_stage(), zero2.engine.zero_optimization_stage()) == (0, 2)
    assert _run(auto, 4) == pytest.approx(_run(zero2, 4), rel=1e-5)
    after = zero2.engine.module.state_dict()
    for name, value in auto.engine.module.state_dict().items():
        assert torch.allclose(value, after[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_one_rank_fp32_step_skips_the_identity_all_reduce(mode: str) -> None:
    """Over a group of one the all-reduce after backward is the identity: skipped, same run."""
    calls = {"skipping": 0, "reducing": 0}

    def counting(trainer, key: str) -> None:
        original = trainer.engine.allreduce_gradients

        def wrapped(*args, **kwargs):
            calls[key] += 1
            return original(*args, **kwargs)

        trainer.engine.allreduce_gradients = wrapped

    skipping = tiny_trainer(f"mode={mode}", "adapter.kind=attn")
    reducing = tiny_trainer(f"mode={mode}", "adapter.kind=attn")
    reducing.engine.enable_backward_allreduce = True  # DeepSpeed's own behaviour
    counting(skipping, "skipping")
    counting(reducing, "reducing")
    assert _run(skipping, 4) == _run(reducing, 4)
    assert calls == {"skipping": 0, "reducing": 4}
    after = reducing.engine.module.state_dict()
    for name, value in skipping.engine.module.state_dict().items():
        assert torch.equal(value, after[name]), name


def test_only_a_one_rank_fp32_stage_0_engine_skips_the_all_reduce() -> None:
    assert reduces_nothing(0, 1, {})
    assert not reduces_nothing(0, 2, {}), "two ranks must average their gradients"
    assert not reduces_nothing(1, 1, {}), "ZeRO moves gradients into its partitions there"
    assert not reduces_nothing(0, 1, {"bf16": {"enabled": True}})
    assert not reduces_nothing(0, 1, {"fp16": {"enabled": True}})
    zero2 = tiny_trainer("mode=frozen", "adapter.kind=attn", "engine.zero_stage=2")
    assert zero2.engine.enable_backward_allreduce


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_one_rank_fp32_clipping_is_deepspeeds_bit_for_bit(mode: str) -> None:
    """The foreach clip of a 1-rank fp32 stage-0 engine trains exactly as DeepSpeed's own
    per-parameter one, with clipping active at every step (max norm 0.05)."""
    calls = []
    ours = tiny_trainer(f"mode={mode}", "adapter.kind=attn", "optim.grad_clip=0.05")
    theirs = tiny_trainer(f"mode={mode}", "adapter.kind=attn", "optim.grad_clip=0.05")
    assert "clip_fp32_gradients" in vars(ours.engine), "the 1-rank engine clips in foreach calls"
    del vars(theirs.engine)["clip_fp32_gradients"]  # DeepSpeed's method again
    clip = ours.engine.clip_fp32_gradients
    ours.engine.clip_fp32_gradients = lambda: calls.append(clip())
    assert _run(ours, 4) == _run(theirs, 4)
    assert len(calls) == 4 and all(float(norm) > 0.05 for norm in calls), "clipping never acted"
    after = theirs.engine.module.state_dict()
    for name, value in ours.engine.module.state_dict().items():
        assert torch.equal(value, after[name]), name


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])
def test_clip_one_rank_matches_deepspeeds_clip_grad_norm(max_norm: float) -> None:
    from deepspeed.runtime.utils import clip_grad_norm_

    tiny_trainer("mode=frozen")  # DeepSpeed's process group, which its clip all-reduces over
    gen = torch.Generator().manual_seed(3)
    shapes = [(96,), (384, 96), (96, 384), (12, 96), (3,)]
    ours = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    theirs = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for a, b in zip(ours, theirs, strict=True):
        a.grad = torch.randn(a.shape, generator=gen)
        b.grad = a.grad.clone()
    no_grad = torch.nn.Parameter(torch.zeros(2))  # skipped by both
    total = clip_one_rank([*ours, no_grad], max_norm)
    expected = clip_grad_norm_([*theirs, no_grad], max_norm)
    assert torch.equal(total.reshape(()), expected.reshape(()))
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a.grad, b.grad)
    clipped = float(torch.stack([a.grad.norm() for a in ours]).norm())
    assert clipped == pytest.approx(min(max_norm, float(total)), rel=1e-4)


def test_a_process_that_left_its_group_trains_again() -> None:
    """`leave_group` (every command's last step) must not break a later run in the process
    (a notebook, the in-process tests): DeepSpeed forgets the destroyed group too."""
    first = _run(tiny_trainer("mode=frozen", "adapter.kind=attn"), 2)
    leave_group()
    assert not torch.distributed.is_initialized()
    assert _run(tiny_trainer("mode=frozen", "adapter.kind=attn"), 2) == first
    assert torch.distributed.is_initialized()


def test_frozen_mode_learns_temporal_task() -> None:
    """Only temporal order separates the classes of TensorBatches: the head must learn it."""
    trainer = tiny_trainer("mode=frozen", "adapter.kind=mlp", "optim.lr=3e-3", "train.steps=60")
    losses = _run(trainer, 60)
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10


def test_torch_adamw_impl_needs_no_build_and_trains() -> None:
    """`optim.impl=torch` (the default): DeepSpeed wraps torch's AdamW (no JIT-built op)."""
    trainer = tiny_trainer("mode=frozen", "adapter.kind=mlp")
    inner = trainer.engine.optimizer
    inner = getattr(inner, "optimizer", inner)  # ZeRO wraps the basic optimizer
    assert type(inner) is torch.optim.AdamW
    # fused on every device: torch's per-tensor loop costs ~10x more on a CPU
    assert all(group["fused"] for group in inner.param_groups)
    before = {n: p.detach().clone() for n, p in trainer.model.temporal_head.named_parameters()}
    assert all(math.isfinite(x) for x in _run(trainer, 3))
    moved = [
        n
        for n, p in trainer.model.temporal_head.named_parameters()
        if not torch.equal(p, before[n])
    ]
    assert moved, "torch AdamW must update the trainable parameters"
    with pytest.raises(ValueError, match="optim.impl"):
        tiny_trainer("optim.impl=adam8bit")


def test_one_rank_cpu_group_builds_no_shm_comm_op(tmp_path) -> None:
    """A plain `vivit train` on a CPU is a 1-rank group: DeepSpeed's shared-memory all-reduce
    kernel is neither compiled (about a minute on a fresh machine) nor loaded."""
    import os
    import subprocess
    import sys

    probe = (
        "from core.engine import init_distributed\n"
        "print(init_distributed())\n"
        "import deepspeed.comm.comm as c\n"
        "print('shm op', c.cdb.shm_comm_op)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env |= {"TORCH_EXTENSIONS_DIR": str(tmp_path), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "(0, 1)" in proc.stdout and "shm op None" in proc.stdout, proc.stdout
    assert not list(tmp_path.rglob("*shm*")), "the shm op was compiled"
