"""`vivit config`: every key is listed with type, default and its field docstring; `--show`
prints the resolved config; `vivit train --help` points to it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from core.config import ExperimentConfig, load_config
from core.configtools import describe, dump_yaml, field_docs, format_value, to_dict, type_name
from launch import config as config_cmd
from launch import train as train_cmd


@dataclasses.dataclass
class _Sample:
    """Class docstring (not a field's)."""

    first: int = 1
    """First's doc,
    on two lines."""
    # a comment is not a docstring
    second: str | None = None
    third: tuple[float, float] = (0.5, 2.0)
    """Third's doc."""


def test_field_docs_read_the_string_under_each_field() -> None:
    assert field_docs(_Sample) == {"first": "First's doc,\non two lines.", "third": "Third's doc."}


def test_type_names_and_values_read_like_yaml() -> None:
    keys = {k.key: k for k in describe(_Sample)}
    assert keys["second"].type == "str | None" and format_value(keys["second"].default) == "null"
    assert keys["third"].type == "tuple[float, float]"
    assert format_value(keys["third"].default) == "[0.5, 2.0]"
    assert type_name(Literal["full", "frozen"]) == "full | frozen"
    assert type_name(dict[str, Any]) == "dict[str, Any]"


def test_every_config_key_is_documented() -> None:
    """A new field without a docstring would be invisible to `vivit config`: say what it does."""
    keys = describe(ExperimentConfig)
    undocumented = [k.key for k in keys if not k.doc]
    assert not undocumented, f"add a docstring under these config fields: {undocumented}"
    assert {k.key for k in keys} >= {"mode", "data.root", "train.steps", "seed", "out_dir",
                                      "resume", "spatial.model", "spatial.weights",
                                      "adapter.kind", "temporal.init", "engine.ds_config"}  # fmt: skip


def test_listing_shows_key_type_default_and_doc(capsys: pytest.CaptureFixture[str]) -> None:
    assert config_cmd.main([]) == 0
    out = capsys.readouterr().out
    assert "data.frames: int = 8\n    T: frames per clip fed to the model." in out
    assert "mode: full | frozen = frozen\n" in out
    assert "adapter.kind: none | mlp | attn = none\n" in out
    assert "[data]" in out and "[optim]" in out
    assert config_cmd.main(["optim"]) == 0
    only = capsys.readouterr().out
    assert "optim.lr:" in only and "data.frames" not in only
    assert config_cmd.main(["nosuch"]) == 2


def test_show_prints_the_resolved_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overrides = ["mode=full", "train.steps=3", "optim.lr=2e-4"]
    assert config_cmd.main(["--show", "configs/tiny.yaml", *overrides]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    expected = to_dict(load_config("configs/tiny.yaml", overrides))
    assert shown["mode"] == "full" and shown["train"]["steps"] == 3
    assert shown == yaml.safe_load(yaml.safe_dump(expected))

    run = tmp_path / "run"  # a run directory: its config.yaml, as `vivit train` wrote it
    run.mkdir()
    dump_yaml(load_config(None, ["seed=7"]), run / "config.yaml")
    assert config_cmd.main(["--show", str(run)]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["seed"] == 7


def test_show_rejects_bad_keys_and_stray_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert config_cmd.main(["--show", "configs/tiny.yaml", "adapter.knd=mlp"]) == 2
    assert "did you mean 'kind'" in capsys.readouterr().err
    assert config_cmd.main(["mode=full"]) == 2
    assert "--show" in capsys.readouterr().err


def test_train_help_points_to_vivit_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train_cmd.parse_args(["--help"])
    assert "vivit config" in capsys.readouterr().out
