"""Batch output paths: mirror and BIDS naming, sanitised components, clashes told apart, nothing
outside OUT, the BIDS dataset description, stale temporaries removed, and the per-item archive
extraction that refuses unsafe entries."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest
from batch_data import nifti
from conftest import refused

from mrisr.batch.discover import Item, item_files
from mrisr.batch.outputs import (
    assign,
    guess_suffix,
    inside,
    relative_output,
    remove_stale_temporaries,
    safe_name,
    write_dataset_description,
)
from mrisr.errors import InputError, OutputError


def _item(display: str, kind: str = "nifti", **kw: object) -> Item:
    return Item(id="ab" * 32, kind=kind, paths=(Path("/x"),), rel_paths=(display,), display=display, **kw)


def test_safe_name() -> None:
    assert safe_name("T2 AX/thick*") == "T2_AX_thick"
    assert safe_name("..") == "item" and safe_name(".hidden") == "hidden" and safe_name("") == "item"
    assert safe_name("a" * 300) == "a" * 120


def test_mirror_paths() -> None:
    assert relative_output(_item("sub-01/anat/sub-01_T2w.nii.gz"), "mirror", "nifti") == PurePosixPath(
        "sub-01/anat/sub-01_T2w.nii.gz")
    assert relative_output(_item("a/scan.nrrd", "nrrd"), "mirror", "nifti") == PurePosixPath("a/scan.nii.gz")
    assert relative_output(_item("a/scan.nii"), "mirror", "nrrd") == PurePosixPath("a/scan.nrrd")
    # --format dicom: only DICOM items become series folders; volume files stay NIfTI.
    assert relative_output(_item("a/scan.nii"), "mirror", "dicom") == PurePosixPath("a/scan.nii.gz")
    series = _item("pacs/export.zip/study 1#7", "dicom", series_number=7, description="T2 AX / thick")
    assert relative_output(series, "mirror", "dicom") == PurePosixPath("pacs/export/study_1/series-7_T2_AX_thick")
    assert relative_output(series, "mirror", "nifti").name == "series-7_T2_AX_thick.nii.gz"
    root_series = _item(".", "dicom")
    assert relative_output(root_series, "mirror", "nifti") == PurePosixPath("series-abababab.nii.gz")


def test_bids_paths() -> None:
    bids = relative_output(_item("sub-01/ses-2/anat/sub-01_ses-2_run-1_T2w.nii.gz"), "bids", "nifti")
    assert bids == PurePosixPath("derivatives/mrisr/sub-01/ses-2/anat/sub-01_ses-2_run-1_desc-sr_T2w.nii.gz")
    replaced = relative_output(_item("raw/sub-02_desc-old_FLAIR.nii"), "bids", "nifti")
    assert replaced == PurePosixPath("derivatives/mrisr/sub-02/anat/sub-02_desc-sr_FLAIR.nii.gz")
    dicom = _item("sub-07/dicom/t2#4", "dicom", series_number=4, description="T2 AX thick")
    assert relative_output(dicom, "bids", "nifti") == PurePosixPath(
        "derivatives/mrisr/sub-07/anat/sub-07_acq-T2AXthick_run-4_desc-sr_T2w.nii.gz")
    other = _item("Patient 9/t1_mprage.nii.gz")
    assert relative_output(other, "bids", "nifti").name == "sub-Patient9_acq-t1mprage_desc-sr_T1w.nii.gz"
    with refused(InputError, "cannot tell the BIDS suffix"):
        relative_output(_item("p/localizer", "dicom", description="localizer"), "bids", "nifti")


@pytest.mark.parametrize(("text", "suffix"), [
    ("T2 AX thick", "T2w"), ("t2_flair_tra", "FLAIR"), ("T1 MPRAGE", "T1w"), ("mprage", "T1w"),
    ("T2* GRE", "T2starw"), ("t2star", "T2starw"), ("PD FSE", "PDw"), ("sub-01_PDw", "PDw"),
    ("localizer", None), ("DWI b1000", None),
])
def test_guess_suffix(text: str, suffix: str | None) -> None:
    assert guess_suffix(text) == suffix


def test_clashes_get_the_key_and_reserved_paths_stay() -> None:
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    same = PurePosixPath("x/scan.nii.gz")
    got = assign({a: same, b: PurePosixPath("X/SCAN.nii.gz"), c: PurePosixPath("x/other")}, {}, "mirror")
    assert got == {a: same, b: PurePosixPath("X/SCAN-bbbbbbbb.nii.gz"), c: PurePosixPath("x/other")}
    # A path a done item wrote stays its own, whoever comes first now.
    got = assign({a: same, b: same}, {"x/scan.nii.gz": b}, "mirror")
    assert got == {a: PurePosixPath("x/scan-aaaaaaaa.nii.gz"), b: same}
    bids = PurePosixPath("derivatives/mrisr/sub-1/anat/sub-1_desc-sr_T2w.nii.gz")
    assert assign({a: bids, b: bids}, {}, "bids")[b].name == "sub-1_desc-srbbbbbbbb_T2w.nii.gz"


def test_nothing_outside_out(tmp_path: Path) -> None:
    assert inside(tmp_path, PurePosixPath("a/b.nii.gz")) == tmp_path / "a" / "b.nii.gz"
    for bad in ("../escape.nii.gz", "/etc/passwd", "a/../../x"):
        with refused(OutputError, "outside the output folder"):
            inside(tmp_path, PurePosixPath(bad))


def test_dataset_description(tmp_path: Path) -> None:
    path = write_dataset_description(tmp_path, {"raw": "file:///data/a"})
    assert path == tmp_path / "derivatives" / "mrisr" / "dataset_description.json"
    desc = json.loads(path.read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "mrisr"
    assert desc["GeneratedBy"][0]["Version"] and desc["BIDSVersion"]
    write_dataset_description(tmp_path, {"other": "file:///data/b"})
    assert json.loads(path.read_text())["DatasetLinks"] == {"other": "file:///data/b", "raw": "file:///data/a"}
    assert [p.name for p in path.parent.iterdir()] == ["dataset_description.json"]


def test_remove_stale_temporaries(tmp_path: Path) -> None:
    dest = tmp_path / "scan.nii.gz"
    (tmp_path / ".scan.nii.gz.tmp-1a2b3c4d.nii.gz").write_bytes(b"partial")
    (tmp_path / ".scan.nii.gz.old-1a2b3c4d.nii.gz").mkdir()
    (tmp_path / ".other.nii.gz.tmp-1a2b3c4d.nii.gz").write_bytes(b"not ours")
    assert len(remove_stale_temporaries(dest)) == 2
    assert [p.name for p in tmp_path.iterdir()] == [".other.nii.gz.tmp-1a2b3c4d.nii.gz"]


def test_item_files_extracts_only_its_folder_and_refuses_unsafe_archives(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    nifti(staging / "a" / "one.nii.gz", 1)
    nifti(staging / "b" / "two.nii.gz", 2)
    archive = tmp_path / "vols.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(staging.rglob("*.nii.gz")):
            zf.write(p, p.relative_to(staging).as_posix())
    item = Item(id="0" * 64, kind="nifti", paths=(Path("a/one.nii.gz"),), rel_paths=("vols.zip/a/one.nii.gz",),
                display="vols.zip/a/one.nii.gz", container=archive)
    with item_files(item) as files:
        assert [f.name for f in files] == ["one.nii.gz"] and files[0].is_file()
        extracted = {p.relative_to(files[0].parents[1]).as_posix() for p in files[0].parents[1].rglob("*")}
        assert extracted == {"a", "a/one.nii.gz"}
    assert not files[0].exists()
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("../escaped.txt", b"gotcha")
    with refused(InputError, "unsafe archive entry"), item_files(replace(item)):
        pass
    assert not (tmp_path / "escaped.txt").exists()
