"""The built wheel is self-contained: shipped configs and DeepSpeed JSONs are found through
`importlib.resources` after a plain (non-editable) install, from any working directory."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from core.config import resolve_config_path
from core.configtools import ConfigError
from core.engine import resolve_ds_config_path

REPO = Path(__file__).resolve().parent.parent
NOT_SOURCE = (".git", ".venv", "build", "*.egg-info", "runs", "mlruns", "__pycache__", ".*_cache")


def test_relative_names_fall_back_to_the_packaged_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ or ds_configs/ here
    tiny = resolve_config_path("configs/tiny.yaml")
    assert tiny.is_file() and tiny.parent.name == "configs"
    assert resolve_config_path("tiny.yaml") == tiny
    assert resolve_ds_config_path("ds_configs/zero2_bf16.json").name == "zero2_bf16.json"
    with pytest.raises(ConfigError, match=r"configs/tiny\.yaml"):  # lists what is shipped
        resolve_config_path("configs/tinyy.yaml")


def test_a_file_in_the_working_directory_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny.yaml").write_text("mode: full\n")
    (tmp_path / "ds_configs").mkdir()
    (tmp_path / "ds_configs" / "zero2_bf16.json").write_text("{}")
    assert resolve_config_path("configs/tiny.yaml") == Path("configs/tiny.yaml")
    assert resolve_ds_config_path("ds_configs/zero2_bf16.json") == Path(
        "ds_configs/zero2_bf16.json"
    )
    with pytest.raises(ConfigError):  # an absolute path is never redirected
        resolve_config_path(tmp_path / "elsewhere" / "tiny.yaml")


def _test_env_site_dirs() -> list[str]:
    dirs = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    dirs.update(site.getsitepackages())
    return sorted(d for d in dirs if Path(d).is_dir())


@pytest.mark.slow
def test_wheel_installs_and_trains_from_another_directory(tmp_path: Path) -> None:
    """Build the wheel, install it (--no-deps) into a fresh venv that sees the test env's
    packages, and run `vivit shards synth` + `vivit train configs/tiny.yaml` outside the repo."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(src)],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("frozen_vivit-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    vpy = venv / "bin" / "python"
    vsite = subprocess.run(
        [str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # The test environment's packages (torch, DeepSpeed, ...) sit *behind* the venv's own, as
    # plain path entries: their .pth files (an editable install's finder) are not run, so
    # nothing can be found in the checkout instead of the wheel.
    (Path(vsite) / "zz_test_env.pth").write_text("\n".join(_test_env_site_dirs()) + "\n")
    subprocess.run(
        [*pip, "--python", str(vpy), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        check=True,
        timeout=300,
    )

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI="")

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stderr[-4000:]}"
        return proc

    code = "import core, configs, ds_configs; print(core.__file__, configs.__file__, ds_configs.__file__)"  # fmt: skip
    where = run(str(vpy), "-c", code).stdout.split()
    assert all(f.startswith(vsite) for f in where), f"not the installed wheel: {where}"

    vivit = str(venv / "bin" / "vivit")
    run(vivit, "shards", "synth", "--out", "shards", "--clips", "16", "--val-clips", "8",
        "--frames", "4", "--size", "32")  # fmt: skip
    run(
        vivit, "train", "configs/tiny.yaml", "train.steps=2", "out_dir=run",
        "data.root=shards", "data.synthetic=false", "data.frames=4",
        "train.micro_batch_size=4", "train.log_every=1", "optim.warmup_steps=1",
        "train.progress=false",
    )  # fmt: skip
    summary = json.loads((work / "run" / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["mode"] == "frozen"
    resolved = (work / "run" / "config.yaml").read_text()
    assert "ds_config: ds_configs/zero2_bf16.json" in resolved  # the packaged default was used
    assert not (work / "configs").exists() and not (work / "ds_configs").exists()
