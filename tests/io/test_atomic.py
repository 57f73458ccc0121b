"""atomic_output: no partial outputs, no silent overwrite, inputs never touched."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom
import pytest
from conftest import refused

from mrisr.errors import InputError, MrisrError, OutputError
from mrisr.io.atomic import atomic_output


def _mrisr_dicom(path: Path) -> None:
    """A tiny DICOM file that says mrisr wrote it (SoftwareVersions), as a previous output would."""
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SoftwareVersions = "mrisr 0.1.0"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


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
        _mrisr_dicom(tmp / "IM_0001.dcm")
        _mrisr_dicom(tmp / "IM_0002.dcm")
    assert _names(dest) == ["IM_0001.dcm", "IM_0002.dcm"]
    with pytest.raises(OutputError, match="force"):
        with atomic_output(dest, force=False):
            pass  # pragma: no cover
    with atomic_output(dest, force=True) as tmp:
        tmp.mkdir()
        (tmp / "IM_1.dcm").write_bytes(b"2")
    assert _names(dest) == ["IM_1.dcm"]  # the old series is gone, not merged
    assert _names(tmp_path) == ["series"]


def test_empty_folder_is_replaced_with_force(tmp_path: Path) -> None:
    dest = tmp_path / "series"
    dest.mkdir()
    with atomic_output(dest, force=True) as tmp:
        tmp.mkdir()
        (tmp / "IM_01.dcm").write_bytes(b"new")
    assert _names(dest) == ["IM_01.dcm"]


@pytest.mark.parametrize("writer_makes", ["file", "folder"])
def test_folder_and_file_never_replace_each_other(tmp_path: Path, writer_makes: str) -> None:
    dest = tmp_path / "out"
    if writer_makes == "file":
        dest.mkdir()  # an (empty, so otherwise replaceable) folder
        expected = "is a folder; refusing to replace a folder with a file"
    else:
        dest.write_bytes(b"old")
        expected = "is a file; refusing to replace a file with a folder"
    with pytest.raises(OutputError) as info:
        with atomic_output(dest, force=True) as tmp:
            if writer_makes == "file":
                tmp.write_bytes(b"new")
            else:
                tmp.mkdir()
                (tmp / "IM_0001.dcm").write_bytes(b"new")
    assert expected in str(info.value) and str(dest) in str(info.value)
    assert ".tmp-" not in str(info.value)
    assert _names(tmp_path) == ["out"]  # nothing replaced, temp removed
    if writer_makes == "file":
        assert dest.is_dir() and _names(dest) == []
    else:
        assert dest.read_bytes() == b"old"


@pytest.mark.parametrize(
    ("content", "offending"),
    [
        (["IM_0001.dcm", "thesis.docx"], "thesis.docx"),
        (["notes.txt"], "notes.txt"),
        (["IM_0001.dcm", "IM_0002.DCM"], "IM_0002.DCM"),
        (["IM_0001.dcm", "IM_x.dcm"], "IM_x.dcm"),
        (["IM_0001.dcm", "sub/"], "sub"),
        ([".DS_Store"], ".DS_Store"),
        (["IM_0007.dcm"], "IM_0007.dcm"),  # named like ours, but another exporter's (no mrisr inside)
    ],
)
def test_force_never_deletes_a_folder_that_is_not_an_mrisr_series(
    tmp_path: Path, content: list[str], offending: str
) -> None:
    dest = tmp_path / "series"
    dest.mkdir()
    for name in content:
        if name.endswith("/"):
            (dest / name).mkdir()
        elif name == "IM_0001.dcm":
            _mrisr_dicom(dest / name)  # an earlier mrisr output beside the offending entry
        else:
            (dest / name).write_bytes(b"keep")
    reached = False
    with pytest.raises(OutputError) as info:
        with atomic_output(dest, force=True) as tmp:
            reached = True  # pragma: no cover - refused before the writer runs
            tmp.mkdir()  # pragma: no cover
    message = str(info.value)
    assert not reached
    assert f"holds files that are not an mrisr DICOM series (e.g. {offending})" in message
    assert "refusing to delete them" in message and "choose a new folder" in message
    assert _names(dest) == sorted(n.rstrip("/") for n in content)
    assert _names(tmp_path) == ["series"]


def test_folder_that_changes_during_the_write_is_still_checked(tmp_path: Path) -> None:
    dest = tmp_path / "series"
    dest.mkdir()
    with pytest.raises(OutputError, match=r"e\.g\. thesis\.docx"):
        with atomic_output(dest, force=True) as tmp:
            (dest / "thesis.docx").write_bytes(b"keep")  # someone saved here meanwhile
            tmp.mkdir()
    assert _names(dest) == ["thesis.docx"] and _names(tmp_path) == ["series"]


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("spelling", [".", "..", "cwd", "ancestor", "root", "home", "home_relative"])
def test_protected_folders_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, force: bool, spelling: str
) -> None:
    work = tmp_path / "home" / "me" / "project"
    work.mkdir(parents=True)
    (work / "IM_0001.dcm").write_bytes(b"keep")  # would otherwise pass as a series folder
    monkeypatch.chdir(work)
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "home" / "me"))
    dest, expected = {
        ".": (Path("."), "is the current folder"),
        "..": (Path(".."), "is a folder above the current folder"),
        "cwd": (work, "is the current folder"),
        "ancestor": (tmp_path, "is a folder above the current folder"),
        "root": (Path(work.anchor), "is the filesystem root"),
        "home": (tmp_path / "home" / "me", "is a folder above"),
        "home_relative": (Path("../../me/project/.."), "is a folder above"),
    }[spelling]
    with pytest.raises(OutputError) as info:
        with atomic_output(dest, force=force) as tmp:
            tmp.mkdir()  # pragma: no cover
    message = str(info.value)
    assert expected in message and "refusing to write there" in message
    assert "choose a new folder" in message
    assert _names(work) == ["IM_0001.dcm"]


def test_home_folder_is_refused_from_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "me"
    home.mkdir()
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: home))
    monkeypatch.chdir(tmp_path.parent)
    with pytest.raises(OutputError, match="is your home folder; refusing to write there"):
        with atomic_output(home, force=True) as tmp:
            tmp.mkdir()  # pragma: no cover


def test_dot_dot_below_the_current_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path.parent)
    (tmp_path / "a").mkdir()
    with pytest.raises(OutputError, match=r"by reference \('\.' or '\.\.'\)"):
        with atomic_output(tmp_path / "a" / "..", force=True) as tmp:
            tmp.mkdir()  # pragma: no cover
    assert _names(tmp_path) == ["a"]


@pytest.mark.parametrize("error_class", [OutputError, InputError])
def test_writer_errors_name_the_destination_not_the_temporary_path(
    tmp_path: Path, error_class: type[MrisrError]
) -> None:
    dest = tmp_path / "series"
    with pytest.raises(error_class) as info:
        with atomic_output(dest, force=False) as tmp:
            tmp.mkdir()
            raise error_class(f"bad slice {tmp / 'IM_0002.dcm'}", tmp / "IM_0002.dcm", fix=f"look in {tmp}")
    error = info.value
    assert type(error) is error_class
    assert error.path == str(dest / "IM_0002.dcm")
    assert error.problem == f"bad slice {dest / 'IM_0002.dcm'}" and error.fix == f"look in {dest}"
    assert ".tmp-" not in str(error) and str(error) == error.one_line()
    assert _names(tmp_path) == []


def test_writer_os_error_becomes_output_error_on_dest(tmp_path: Path) -> None:
    dest = tmp_path / "t1.nii.gz"
    with pytest.raises(OutputError) as info:
        with atomic_output(dest, force=False) as tmp:
            raise PermissionError(13, "Permission denied", str(tmp))
    assert str(info.value) == (
        f"{dest}: cannot write: Permission denied. Fix: check that the folder exists and is writable."
    )
    assert isinstance(info.value.__cause__, PermissionError)
    assert _names(tmp_path) == []


def test_rename_os_error_becomes_output_error_on_dest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "t1.nrrd"
    dest.write_bytes(b"old")

    def cross_device(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link", str(src), None, str(dst))

    with pytest.raises(OutputError, match=r"t1\.nrrd: cannot write: Invalid cross-device link") as info:
        with atomic_output(dest, force=True) as tmp:
            tmp.write_bytes(b"new")
            monkeypatch.setattr(os, "replace", cross_device)
    monkeypatch.undo()
    assert ".tmp-" not in str(info.value)
    assert dest.read_bytes() == b"old" and _names(tmp_path) == ["t1.nrrd"]


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


# --- check_writable: the refusal before any work -----------------------------------------


def test_check_writable_refuses_a_read_only_folder_quickly(read_only_dir) -> None:
    import time

    from mrisr.io.atomic import check_writable

    start = time.perf_counter()
    for dest, folder in ((read_only_dir / "out.nii.gz", False), (read_only_dir / "new" / "deeper", True),
                         (read_only_dir, True)):
        with refused(OutputError, "cannot write in"):
            check_writable(dest, folder=folder)
    assert time.perf_counter() - start < 0.5
    assert not list(read_only_dir.iterdir())  # the probe left nothing behind (nothing could be made)


def test_check_writable_accepts_what_atomic_output_writes_and_leaves_no_probe(tmp_path) -> None:
    from mrisr.io.atomic import check_writable

    assert check_writable(tmp_path / "a" / "b" / "out.nii.gz") == tmp_path / "a" / "b" / "out.nii.gz"
    assert not (tmp_path / "a").exists()  # nothing created: the probe went into the nearest existing folder
    (tmp_path / "batch").mkdir()
    check_writable(tmp_path / "batch", folder=True)  # a folder the command fills may exist
    assert list(tmp_path.iterdir()) == [tmp_path / "batch"] and not list((tmp_path / "batch").iterdir())


def test_check_writable_keeps_atomic_outputs_rules(tmp_path) -> None:
    from mrisr.io.atomic import check_writable

    existing = tmp_path / "out.nii.gz"
    existing.write_bytes(b"x")
    with refused(OutputError, "already exists"):
        check_writable(existing)
    check_writable(existing, force=True)
    with refused(OutputError, "overwrite the input"):
        check_writable(existing, force=True, sources=[existing])
    with refused(OutputError, "is a file, not a folder"):
        check_writable(existing, folder=True)
    with refused(OutputError, "is a file, not a folder"):
        check_writable(existing / "inside.nii.gz")


def test_check_writable_lets_a_command_fill_the_working_folder(tmp_path, monkeypatch) -> None:
    """A batch or training run writes into a folder (never replaces it): '.' may be that folder,
    but no file output may replace the working folder itself."""
    from mrisr.io.atomic import check_writable

    monkeypatch.chdir(tmp_path)
    check_writable(Path("."), folder=True)
    with refused(OutputError, "current folder"):
        check_writable(tmp_path, force=True)


def test_check_writable_takes_a_link_to_a_folder_to_fill(tmp_path) -> None:
    from mrisr.io.atomic import check_writable

    (tmp_path / "disk").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "disk")
    check_writable(tmp_path / "out", folder=True)  # e.g. a batch OUT linked to another disk


def test_check_writable_refuses_what_force_may_not_replace(tmp_path) -> None:
    """With force, an output is replaced only by one of its kind, and a folder only when it is an
    mrisr series: found before the work, as atomic_output would find it after."""
    from mrisr.io.atomic import check_writable

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with refused(OutputError, "not an mrisr DICOM series"):
        check_writable(notes, force=True, kind="series")
    with refused(OutputError, "replace a file with a folder"):
        check_writable(a_file, force=True, kind="series")
    with refused(OutputError, "replace a folder with a file"):
        check_writable(notes, force=True, kind="file")
    check_writable(a_file, force=True, kind="file")


def test_check_writable_without_a_probe_writes_nothing(tmp_path, read_only_dir) -> None:
    import os

    from mrisr.io.atomic import check_writable

    before = os.stat(tmp_path).st_mtime_ns
    check_writable(tmp_path / "out", folder=True, probe=False)
    assert os.stat(tmp_path).st_mtime_ns == before and not (tmp_path / "out").exists()
    with refused(OutputError, "cannot write in"):
        check_writable(read_only_dir / "out", folder=True, probe=False)


def test_a_probe_beside_the_output_is_named_as_its_temporaries(tmp_path, monkeypatch) -> None:
    """Killed between creating and deleting its probe, a process leaves what the batch's rerun
    cleans with the output's own temporaries (``.<name>.tmp-*``), not a stray file."""
    from mrisr.batch.outputs import remove_stale_temporaries
    from mrisr.io import atomic

    made = []

    def killed(path):  # the probe is created, then the process dies before deleting it
        made.append(Path(path))

    monkeypatch.setattr(atomic.os, "unlink", killed)
    atomic.check_writable(tmp_path / "sr.nii.gz")
    monkeypatch.undo()
    assert [p.name.startswith(".sr.nii.gz.tmp-") for p in made] == [True] and made[0].exists()
    assert remove_stale_temporaries(tmp_path / "sr.nii.gz") == made and not made[0].exists()
