"""Atomic writes (locedit.io): a reader sees the old state or the whole new one, never a part, and
a failed write leaves nothing behind."""

from __future__ import annotations

import json

import pytest

from locedit.io import atomic_dir, atomic_path, write_json


def test_atomic_path_renames_on_success_and_cleans_up_on_error(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert not target.exists() and tmp.parent == target.parent
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert target.read_text() == "new" and sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]
    write_json(target, {"b": 1, "a": [2]})
    assert json.loads(target.read_text()) == {"a": [2], "b": 1}


def test_atomic_dir_needs_an_absent_or_empty_folder_unless_replacing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with atomic_dir(out) as tmp:
        (tmp / "x.txt").write_text("1")
        assert not (out / "x.txt").exists()
    assert (out / "x.txt").read_text() == "1"
    with pytest.raises(FileExistsError, match="not an empty folder"), atomic_dir(out):
        pass
    with pytest.raises(RuntimeError), atomic_dir(out, replace=True) as tmp:
        (tmp / "y.txt").write_text("2")
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and [p.name for p in out.iterdir()] == ["x.txt"]
    with atomic_dir(out, replace=True) as tmp:
        (tmp / "y.txt").write_text("2")
    assert [p.name for p in out.iterdir()] == ["y.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError), atomic_dir(tmp_path / "file", replace=True):
        pass


def test_atomic_writes_get_the_modes_of_ordinary_files_and_folders(tmp_path):
    """mkstemp/mkdtemp create owner-only entries; what lands must follow the umask like open()/mkdir()."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "run") as folder:
            (folder / "f.txt").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o755
