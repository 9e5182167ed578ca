"""Config loading: unknown keys name the nearest valid key, bad values name key and value,
and every YAML / DeepSpeed JSON shipped in the repo loads and builds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.config import ExperimentConfig, load_config
from core.configtools import ConfigError
from core.engine import build_ds_config
from core.model import build_model

REPO = Path(__file__).resolve().parent.parent
SHIPPED_YAMLS = sorted(p for p in (REPO / "configs").rglob("*.yaml"))
SHIPPED_DS = sorted((REPO / "ds_configs").glob("*.json"))


def test_misspelt_nested_key_names_key_and_nearest(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  stpes: 10\n")
    with pytest.raises(ConfigError, match=r"'train\.stpes'.*did you mean 'steps'"):
        load_config(path)


def test_misspelt_top_level_key_and_override() -> None:
    with pytest.raises(ConfigError, match=r"'moed'.*did you mean 'mode'"):
        load_config(None, ["moed=full"])
    with pytest.raises(ConfigError, match=r"'spatial\.weigths'.*did you mean 'weights'"):
        load_config(None, ["spatial.weigths=/x.safetensors"])


def test_bad_values_name_key_and_value() -> None:
    with pytest.raises(ConfigError, match=r"'mode'.*'frozn'.*did you mean 'frozen'"):
        load_config(None, ["mode=frozn"])
    with pytest.raises(ConfigError, match=r"'train\.steps'.*'ten'"):
        load_config(None, ["train.steps=ten"])
    with pytest.raises(ConfigError, match=r"data\.frames must be >= 1"):
        load_config(None, ["data.frames=0"])


def test_overrides_are_typed_and_nested() -> None:
    cfg = load_config(
        None, ["train.steps=7", "optim.lr=3e-4", "spatial.model_kwargs={depth: 2}", "resume=none"]
    )
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.train.steps == 7 and cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.spatial.model_kwargs == {"depth": 2}
    assert cfg.resume is None


def test_repo_ships_tiny_config() -> None:
    assert REPO / "configs" / "tiny.yaml" in SHIPPED_YAMLS


@pytest.mark.parametrize("path", SHIPPED_YAMLS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_yaml_loads_and_builds(path: Path) -> None:
    cfg = load_config(
        path, ["spatial.weights=null", "temporal.init=random", "temporal.checkpoint=null"]
    )
    if cfg.spatial.img_size > 64:  # big recipes: check the config only, build a shrunken copy
        cfg = load_config(
            path,
            [
                "spatial.weights=null",
                "temporal.init=random",
                "temporal.checkpoint=null",
                "spatial.img_size=32",
                "spatial.patch_size=8",
                "spatial.model_kwargs={depth: 2, embed_dim: 64, num_heads: 2}",
                "temporal.width=null",
                "temporal.heads=null",
                "adapter.heads=2",
            ],
        )
    model = build_model(cfg, num_classes=5)
    frames = torch.randn(1, cfg.data.frames, 3, cfg.spatial.img_size, cfg.spatial.img_size)
    logits = model(frames)
    assert logits.shape == (1, 5) and torch.isfinite(logits).all()


@pytest.mark.parametrize("path", SHIPPED_DS, ids=lambda p: p.name)
def test_every_shipped_deepspeed_json_resolves(path: Path) -> None:
    cfg = load_config(
        None, [f"engine.ds_config={path}", "train.micro_batch_size=3", "train.grad_accum=2"]
    )
    ds = build_ds_config(cfg.engine, cfg.optim, 3, 2, on_gpu=True, world_size=1)
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 2
    assert ds["optimizer"]["params"]["lr"] == cfg.optim.lr
    assert ds["zero_optimization"]["stage"] in (0, 1, 2, 3)
    cpu = build_ds_config(cfg.engine, cfg.optim, 3, 2, on_gpu=False, world_size=1)
    assert "bf16" not in cpu and "fp16" not in cpu  # auto precision on CPU is fp32


def _stage(*overrides: str, on_gpu: bool, world_size: int) -> int:
    cfg = load_config(None, list(overrides))
    ds = build_ds_config(cfg.engine, cfg.optim, 4, 1, on_gpu=on_gpu, world_size=world_size)
    return ds["zero_optimization"]["stage"]


def test_one_rank_fp32_drops_zero_1_and_2_to_stage_0_unless_asked() -> None:
    """ZeRO-1/2 over a group of one partitions nothing; in fp32 the run takes stage 0. Several
    ranks, bf16, an offload JSON or an explicit `engine.zero_stage` keep the stage."""
    assert _stage(on_gpu=False, world_size=1) == 0  # the default JSON is zero2_bf16
    assert _stage("engine.ds_config=zero1_bf16.json", on_gpu=False, world_size=1) == 0
    assert _stage(on_gpu=False, world_size=2) == 2
    assert _stage(on_gpu=True, world_size=1) == 2  # bf16 on the GPU
    assert _stage("engine.zero_stage=2", on_gpu=False, world_size=1) == 2
    assert _stage("engine.ds_config=zero3_bf16.json", on_gpu=False, world_size=1) == 3
    offload = ("engine.ds_config=zero2_offload_bf16.json", "engine.precision=fp32")
    assert _stage(*offload, on_gpu=True, world_size=1) == 2


def test_unknown_deepspeed_json_lists_shipped() -> None:
    cfg = load_config(None, ["engine.ds_config=ds_configs/zero9.json"])
    with pytest.raises(FileNotFoundError, match="zero2_bf16.json"):
        build_ds_config(cfg.engine, cfg.optim, 1, 1, on_gpu=False, world_size=1)
