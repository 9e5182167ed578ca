"""`temporal.head_norm=batch`: the classifier sees batch-normalised features from step 0."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from core.model import build_model
from core.temporal import TemporalConfig
from tests.model_helpers import CLASSES, tiny_config, tiny_frames


def _features(model, frames: torch.Tensor) -> torch.Tensor:
    head = model.temporal_head
    tokens = model.spatial(frames).to(head.dtype)
    return head.head_norm(head.temporal(head.adapter(*tokens)))


def test_default_head_norm_centres_and_scales_the_pooled_feature() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(), CLASSES)
    assert isinstance(model.temporal_head.head_norm, torch.nn.BatchNorm1d)
    assert not list(model.temporal_head.head_norm.parameters())  # no affine: nothing to train
    model.train()
    feats = _features(model, tiny_frames(batch=16)).detach()
    assert feats.mean(0).abs().max() < 1e-4
    var = feats.var(0, unbiased=False)
    assert ((var > 0.8) & (var < 1.0 + 1e-4)).all()  # 1 up to BatchNorm's eps
    # without it the pooled feature is mostly the same vector for every clip (the plateau)
    plain = build_model(tiny_config(temporal=TemporalConfig(depth=2, head_norm="none")), CLASSES)
    raw = _features(plain, tiny_frames(batch=16)).detach()
    assert raw.std(0).mean() < 0.2 * raw.mean(0).abs().mean()


def test_eval_uses_running_statistics_and_stage2_inherits_them(tmp_path: Path) -> None:
    torch.manual_seed(0)
    stage1 = build_model(tiny_config(frames=4, mode="full"), CLASSES)
    stage1.train()
    for seed in range(5):
        stage1(tiny_frames(batch=8, frames=4, seed=seed))
    norm = stage1.temporal_head.head_norm
    assert int(norm.num_batches_tracked) == 5 and norm.running_var.ne(1).any()
    stage1.eval()
    one = stage1(tiny_frames(batch=1, frames=4))  # a batch of one works in eval
    assert torch.isfinite(one).all()
    ckpt = tmp_path / "run" / "checkpoints" / "step_0000005"
    ckpt.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in stage1.state_dict().items()}
    save_file(state, str(ckpt / "model.safetensors"))
    (ckpt / "meta.json").write_text(json.dumps({"step": 5, "mode": "full"}))
    cfg = TemporalConfig(depth=2, init="checkpoint", checkpoint=str(tmp_path / "run"))
    stage2 = build_model(tiny_config("attn", frames=8, temporal=cfg), CLASSES)
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(stage2.temporal_head.head_norm, key), getattr(norm, key))
    # a checkpoint written without the normalisation still loads (statistics start fresh)
    old = {k: v for k, v in state.items() if "head_norm" not in k}
    legacy = tmp_path / "legacy" / "step_0000005"
    legacy.mkdir(parents=True)
    save_file(old, str(legacy / "model.safetensors"))
    (legacy / "meta.json").write_text(json.dumps({"step": 5, "mode": "full"}))
    cfg = TemporalConfig(depth=2, init="checkpoint", checkpoint=str(legacy))
    fresh = build_model(tiny_config("attn", frames=8, temporal=cfg), CLASSES)
    assert torch.equal(fresh.temporal_head.head.weight, stage1.temporal_head.head.weight)
    assert int(fresh.temporal_head.head_norm.num_batches_tracked) == 0


def test_a_training_batch_of_one_clip_uses_running_statistics() -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(), CLASSES)
    model.train()
    out = model(tiny_frames(batch=1))
    assert out.shape == (1, CLASSES) and torch.isfinite(out).all()
    assert int(model.temporal_head.head_norm.num_batches_tracked) == 0


def test_multi_rank_statistics_average_cumulatively_with_momentum_none(monkeypatch) -> None:
    """Precise BN sets momentum None; the multi-rank path must then average the batches
    equally, as torch's BatchNorm does (two ranks with identical batches, all-reduce faked)."""
    import core.model as model_mod

    monkeypatch.setattr(model_mod, "_world_size", lambda: 2)
    monkeypatch.setattr(model_mod.dist_nn, "all_reduce", lambda t: t * 2)
    norm = model_mod.FeatureNorm(6)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(5, 6, generator=gen) * (k + 1) + k for k in range(3)]
    norm.train()
    norm.momentum = None
    for x in batches:
        norm(x)
    count = 5 * 2  # the global batch: both ranks
    means = torch.stack([x.mean(0) for x in batches]).mean(0)
    variances = torch.stack([x.var(0, unbiased=False) * count / (count - 1) for x in batches])
    assert int(norm.num_batches_tracked) == 3
    assert torch.allclose(norm.running_mean, means, atol=1e-6)
    assert torch.allclose(norm.running_var, variances.mean(0), rtol=1e-5)
    norm.reset_running_stats()
    norm.momentum = 0.1  # the training default: an exponential average
    norm(batches[0])
    assert torch.allclose(norm.running_mean, 0.1 * batches[0].mean(0), atol=1e-6)
