"""mrisr.io.formats: the one table of file endings, and that no other module keeps its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import mrisr
from mrisr.io import FORMATS
from mrisr.io.formats import (
    ARCHIVE_ENDINGS,
    DICOM_FILE_ENDING,
    FILE_ENDINGS,
    SCAN_ENDINGS,
    SCENE_ENDING,
    VOLUME_ENDINGS,
    WRITE_ENDINGS,
    WRITE_FILE_ENDINGS,
    ending,
    endings_of,
    scan_kind,
    strip_ending,
    with_tag,
)

PACKAGE = Path(mrisr.__file__).parent
TABLE = PACKAGE / "io" / "formats.py"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("t1.nii.gz", ".nii.gz"),
        ("T1.NII.GZ", ".nii.gz"),
        ("t1.nii", ".nii"),
        ("export.tar.gz", ".tar.gz"),
        ("slice.dcm.gz", ".dcm.gz"),
        ("notes.gz", ".gz"),
        ("scene.mrb", ".mrb"),
        ("series_folder", None),
        ("report.pdf", None),
    ],
)
def test_the_longest_ending_wins(name: str, expected: str | None) -> None:
    assert ending(name) == expected


@pytest.mark.parametrize(
    ("name", "kind"),
    [("a.nii.gz", "nifti"), ("a.NHDR", "nrrd"), ("a.mhd", "mha"), ("IM0001.IMA", "dicom"),
     ("a.dcm.gz", "dicom"), ("a.zip", None), ("a.txt", None), ("DICOMDIR", None)],
)
def test_scan_kind_by_name(name: str, kind: str | None) -> None:
    assert scan_kind(name) == kind


def test_strip_ending_keeps_a_name_that_is_only_an_ending() -> None:
    assert strip_ending("t1.nii.gz") == "t1"
    assert strip_ending("Sub-01_T1w.NII.GZ") == "Sub-01_T1w"
    assert strip_ending("export.tar.gz", ARCHIVE_ENDINGS) == "export"
    assert strip_ending("t1.nii.gz", ARCHIVE_ENDINGS) == "t1.nii.gz"  # only the endings asked for
    assert strip_ending(".nii.gz") == ".nii.gz"
    assert strip_ending("folder") == "folder"


def test_with_tag_goes_before_the_whole_ending() -> None:
    assert with_tag("t1.nii.gz", "ab12") == "t1-ab12.nii.gz"
    assert with_tag("t1.nrrd", "ab12") == "t1-ab12.nrrd"
    assert with_tag("series-3_T1", "ab12") == "series-3_T1-ab12"


def test_the_tables_agree_with_each_other() -> None:
    assert set(VOLUME_ENDINGS) == {e for e, k in SCAN_ENDINGS.items() if k != "dicom"}
    assert set(WRITE_FILE_ENDINGS) <= set(VOLUME_ENDINGS)  # mrisr writes only what it reads back
    assert not {".nhdr", ".mhd"} & set(WRITE_FILE_ENDINGS)  # detached headers cannot be renamed atomically
    assert DICOM_FILE_ENDING in endings_of("dicom")
    assert set(WRITE_ENDINGS) == {*(k for k in SCAN_ENDINGS.values()), "dicom"}
    assert FORMATS is WRITE_ENDINGS
    assert {*SCAN_ENDINGS, *ARCHIVE_ENDINGS, SCENE_ENDING} <= set(FILE_ENDINGS)
    assert all(e == e.lower() and e.startswith(".") for e in FILE_ENDINGS)


def _ending_literals(path: Path) -> list[tuple[int, str]]:
    """String constants of ``path`` (f-string parts included) that are exactly a known file ending."""
    known = set(FILE_ENDINGS)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.lower() in known:
            found.append((node.lineno, node.value))
    return found


def test_no_module_keeps_its_own_table_of_endings() -> None:
    """Endings are named in mrisr/io/formats.py only (messages and docstrings may mention them)."""
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {value!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != TABLE
        for line, value in _ending_literals(path)
    ]
    assert not offenders, "use mrisr.io.formats instead of:\n" + "\n".join(offenders)


def test_the_scan_finds_an_ending_written_elsewhere(tmp_path: Path) -> None:
    """The check above is not vacuous: a table like those it replaced is found."""
    module = tmp_path / "module.py"
    module.write_text('SUFFIXES = (".nii.gz", ".nrrd")\nname = f"{stem}.mha"\nmessage = "give a .nii.gz file"\n')
    assert _ending_literals(module) == [(1, ".nii.gz"), (1, ".nrrd"), (2, ".mha")]
