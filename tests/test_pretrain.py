"""`vivit pretrain` on a tiny generated image folder: learns, saves loadable timm weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

from launch.image_pretrain import random_resized_crop
from launch.pretrain import main

TINY = {"depth": 2, "embed_dim": 32, "num_heads": 2}


def _write_folder(root: Path, per_class: int, seed: int) -> None:
    """Two colour classes, a square at a random place: colour is learnable in a few steps."""
    rng = np.random.default_rng(seed)
    for name, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            img = np.full((32, 32, 3), 128, dtype=np.uint8)
            x, y = rng.integers(0, 20, size=2)
            img[y : y + 12, x : x + 12] = colour
            Image.fromarray(img).save(folder / f"{i:03d}.png")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("images")
    _write_folder(root / "train", 24, seed=0)
    _write_folder(root / "val", 8, seed=1)
    out = root / "weights" / "vit.safetensors"
    argv = [str(root), "--model", "vit_tiny_patch16_224", "--out", str(out), "--img-size", "32"]
    argv += ["--patch-size", "8", "--model-kwargs", json.dumps(TINY), "--steps", "40"]
    argv += ["--batch-size", "16", "--lr", "2e-3"]
    return out, main(argv)


def test_pretrain_learns_and_writes_description(pretrained: tuple[Path, int]) -> None:
    out, rc = pretrained
    assert rc == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["model"] == "vit_tiny_patch16_224"
    assert meta["model_kwargs"] == TINY
    assert meta["img_size"] == 32 and meta["patch_size"] == 8
    assert meta["classes"] == ["blue", "red"]
    assert meta["val_images"] == 16
    assert meta["val_top1"] >= 0.9, meta["val_top1"]
    assert not list(out.parent.glob(".*tmp*")), "temporary files left behind"


def test_weights_load_into_headless_timm_model_strictly(pretrained: tuple[Path, int]) -> None:
    out, _ = pretrained
    state = load_file(str(out))
    assert not any(k.startswith("head.") for k in state)
    model = timm.create_model(
        "vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, **TINY
    )
    result = model.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.pos_embed, state["pos_embed"])


def test_weights_load_into_spatial_transformer(pretrained: tuple[Path, int]) -> None:
    from core.spatial import SpatialConfig, SpatialTransformer

    out, _ = pretrained
    cfg = SpatialConfig(
        model="vit_tiny_patch16_224",
        weights=str(out),
        img_size=32,
        patch_size=8,
        model_kwargs=dict(TINY),
    )
    vit_state = SpatialTransformer(cfg).vit.state_dict()  # strict: raises on any key mismatch
    saved = load_file(str(out))
    assert set(vit_state) == set(saved)
    assert all(torch.equal(vit_state[k], saved[k]) for k in saved)


def test_random_resized_crop_moves_content() -> None:
    x = torch.zeros(64, 3, 32, 32)
    x[:, :, 12:20, 12:20] = 1.0
    out = random_resized_crop(x, 0.15, 1.0, True, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    centres = [(out[i, 0] > 0.5).nonzero().float().mean(0) for i in range(64)]
    spread = torch.stack([c for c in centres if not torch.isnan(c).any()]).std(0)
    assert (spread > 1.0).all(), spread  # the object lands at different places


def test_bad_input_names_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "w.safetensors")
    assert main([str(tmp_path / "missing"), "--model", "vit_tiny_patch16_224", "--out", out]) == 2
    assert "missing" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--model", "vit_tiny_patch16_224", "--out", out]) == 2
    assert "no class sub-folders" in capsys.readouterr().err
    assert main([str(tmp_path), "--model", "x", "--out", out, "--model-kwargs", "[1"]) == 2
    assert "--model-kwargs" in capsys.readouterr().err


def test_pretraining_shares_core_weight_decay_rule_and_schedule(tmp_path: Path) -> None:
    """cls_token / pos_embed / norms / biases undecayed (as core.params), core's schedule."""
    from core.optim import warmup_cosine
    from launch.image_pretrain import PretrainConfig, build_model, make_optimizer

    cfg = PretrainConfig(
        images=str(tmp_path),
        model="vit_tiny_patch16_224",
        out=str(tmp_path / "w.safetensors"),
        patch_size=8,
        model_kwargs={"depth": 2, "embed_dim": 48, "num_heads": 3},
        lr=1e-3,
        warmup_steps=4,
    )
    model = build_model(cfg, num_classes=3)
    opt, schedule = make_optimizer(model, cfg, steps=20)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert "cls_token" not in decayed and "pos_embed" not in decayed
    assert "blocks.0.attn.qkv.weight" in decayed and "blocks.0.norm1.weight" not in decayed
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)
    for step in range(6):
        assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * warmup_cosine(step, 4, 20, 0.01))
        opt.step()
        schedule.step()
