"""atomic_output: no partial outputs, no silent overwrite, inputs never touched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mrisr.errors import OutputError
from mrisr.io.atomic import atomic_output


def _names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_writes_file_through_temp_path_with_same_suffixes(tmp_path: Path) -> None:
    dest = tmp_path / "out" / "sub" / "t1.nii.gz"
    with atomic_output(dest, force=False) as tmp:
        assert tmp.parent == dest.parent  # created, and on the same file system
        assert tmp.name.endswith(".nii.gz") and tmp.name != dest.name
        assert not dest.exists()
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new"
    assert _names(dest.parent) == ["t1.nii.gz"]


def test_existing_output_without_force_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "t1.nrrd"
    dest.write_bytes(b"old")
    with pytest.raises(OutputError) as info:
        with atomic_output(dest, force=False) as tmp:
            tmp.write_bytes(b"new")  # pragma: no cover - never reached
    message = str(info.value)
    assert str(dest) in message and "exists" in message and "force" in message
    assert dest.read_bytes() == b"old"
    assert _names(tmp_path) == ["t1.nrrd"]


def test_existing_output_with_force_is_replaced(tmp_path: Path) -> None:
    dest = tmp_path / "t1.nrrd"
    dest.write_bytes(b"old")
    with atomic_output(dest, force=True) as tmp:
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new"
    assert _names(tmp_path) == ["t1.nrrd"]


@pytest.mark.parametrize("existing", [False, True])
def test_failure_mid_write_leaves_no_temp_and_no_partial_dest(tmp_path: Path, existing: bool) -> None:
    dest = tmp_path / "t1.nii.gz"
    if existing:
        dest.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_output(dest, force=True) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert _names(tmp_path) == (["t1.nii.gz"] if existing else [])
    if existing:
        assert dest.read_bytes() == b"old"


def test_failure_mid_write_of_a_folder_removes_it(tmp_path: Path) -> None:
    dest = tmp_path / "series"
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(dest, force=False) as tmp:
            tmp.mkdir()
            (tmp / "IM0001.dcm").write_bytes(b"half")
            raise KeyboardInterrupt
    assert _names(tmp_path) == []


def test_folder_output_created_and_replaced_with_force(tmp_path: Path) -> None:
    dest = tmp_path / "series"
    with atomic_output(dest, force=False) as tmp:
        tmp.mkdir()
        (tmp / "old.dcm").write_bytes(b"1")
    assert _names(dest) == ["old.dcm"]
    with pytest.raises(OutputError, match="force"):
        with atomic_output(dest, force=False):
            pass  # pragma: no cover
    with atomic_output(dest, force=True) as tmp:
        tmp.mkdir()
        (tmp / "new.dcm").write_bytes(b"2")
    assert _names(dest) == ["new.dcm"]  # the old series is gone, not merged
    assert _names(tmp_path) == ["series"]


def test_file_replaces_folder_and_folder_replaces_file(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "x").write_bytes(b"1")
    with atomic_output(dest, force=True) as tmp:
        tmp.write_bytes(b"file")
    assert dest.read_bytes() == b"file"
    with atomic_output(dest, force=True) as tmp:
        tmp.mkdir()
    assert dest.is_dir() and _names(tmp_path) == ["out"]


@pytest.mark.parametrize("spelling", ["same", "relative", "symlink", "inside"])
def test_dest_equal_to_a_source_is_refused_even_with_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    source = tmp_path / "in" / "t1.nii.gz"
    source.parent.mkdir()
    source.write_bytes(b"input")
    dest = {
        "same": source,
        "relative": Path("in") / ".." / "in" / "t1.nii.gz",
        "symlink": tmp_path / "link.nii.gz",
        "inside": source.parent,  # replacing a folder that holds the input
    }[spelling]
    monkeypatch.chdir(tmp_path)
    if spelling == "symlink":
        dest.symlink_to(source)
    with pytest.raises(OutputError) as info:
        with atomic_output(dest, force=True, sources=[str(source)]) as tmp:
            tmp.write_bytes(b"clobbered")  # pragma: no cover
    assert "input" in str(info.value)
    assert source.read_bytes() == b"input"


def test_writer_that_writes_nothing_is_an_error(tmp_path: Path) -> None:
    dest = tmp_path / "t1.nrrd"
    with pytest.raises(OutputError, match="produced nothing"):
        with atomic_output(dest, force=False):
            pass
    assert not dest.exists()
