"""`common.atomic`: the one temp-name-then-rename helper every writer of the project uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.atomic import atomic_path, atomic_write_json, atomic_write_text, temporary_name


def test_write_replaces_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert target.read_text() == '{\n  "x": 2\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_directory_target_is_replaced_in_one_rename(tmp_path: Path) -> None:
    target = tmp_path / "shards"
    for content in ("first", "second"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "f").write_text(content)
    assert (target / "f").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def test_temporary_names_are_hidden_siblings(tmp_path: Path) -> None:
    unique = temporary_name(tmp_path / "step_0000001")
    shared = temporary_name(tmp_path / "step_0000001", unique=False)
    assert unique.parent == shared.parent == tmp_path
    assert shared.name == ".step_0000001.tmp" and unique.name.startswith(".step_0000001.tmp-")
