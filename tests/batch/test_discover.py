"""Batch discovery: NIfTI files, DICOM series in folders and archives, unsafe archives refused,
filters, stable content ids, the dry-run plan as a table and as JSON."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import phantom_affine, refused
from dicom_factory import write_series

from mrisr.batch import discover, item_files, plan_json, plan_table
from mrisr.errors import InputError


def _nifti(path: Path, shape: tuple[int, int, int], spacing: tuple[float, float, float], seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(0, 1000, shape).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), path)
    return path


def _series(folder: Path, n_slices: int, thick: float, description: str, number: int, seed: int = 0) -> list[Path]:
    data = np.random.default_rng(seed).integers(0, 1000, (8, 6, n_slices)).astype(np.int16)
    affine = phantom_affine(0, seed, spacing=(0.9, 1.1, thick))
    return write_series(folder, data, affine, description=description, series_number=number,
                        name_prefix=f"S{number}")


def _zip(archive: Path, folder: Path, prefix: str = "") -> Path:
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, prefix + p.relative_to(folder).as_posix())
    return archive


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with two NIfTI files, a DICOM folder of two series, a zip holding a series."""
    root = tmp_path / "root"
    _nifti(root / "sub-01" / "anat" / "sub-01_T2w.nii.gz", (10, 12, 5), (0.8, 0.8, 4.0), seed=1)
    _nifti(root / "sub-02" / "sub-02_T1w.nii", (10, 12, 20), (1.0, 1.0, 1.0), seed=2)
    _series(root / "study" / "dicom", 6, 5.0, "T2 AX thick", 3, seed=3)
    _series(root / "study" / "dicom", 12, 1.0, "T1 MPRAGE", 7, seed=4)
    staging = tmp_path / "staging"
    _series(staging / "series", 4, 3.0, "FLAIR", 2, seed=5)
    _zip(root / "pacs" / "export.zip", staging)
    (root / "README.txt").write_text("not a scan")
    (root / "sub-01" / "anat" / "sub-01_T2w.json").write_text("{}")
    return root


def test_tree_items(tree: Path) -> None:
    items = discover(tree)
    by_name = {it.display: it for it in items}
    assert sorted(by_name) == [
        "pacs/export.zip/series",
        "study/dicom#3",
        "study/dicom#7",
        "sub-01/anat/sub-01_T2w.nii.gz",
        "sub-02/sub-02_T1w.nii",
    ]
    assert all(it.error is None for it in items)
    t2 = by_name["sub-01/anat/sub-01_T2w.nii.gz"]
    assert t2.kind == "nifti" and t2.shape == (10, 12, 5) and t2.spacing == pytest.approx((0.8, 0.8, 4.0))
    assert t2.n_slices == 5 and t2.paths == (tree / "sub-01/anat/sub-01_T2w.nii.gz",) and t2.container is None
    thick = by_name["study/dicom#3"]
    assert thick.kind == "dicom" and thick.description == "T2 AX thick" and thick.modality == "MR"
    assert len(thick.paths) == 6 and thick.n_slices == 6 and thick.shape == (8, 6, 6)
    assert thick.through_plane_mm == pytest.approx(5.0, abs=1e-3)
    assert all(p.is_absolute() and p.name.startswith("S3_") for p in thick.paths)
    assert len(by_name["study/dicom#7"].paths) == 12
    zipped = by_name["pacs/export.zip/series"]
    assert zipped.container == (tree / "pacs/export.zip").resolve()
    assert zipped.description == "FLAIR" and zipped.n_slices == 4
    assert [p.as_posix() for p in zipped.paths] == [f"series/S2_{n:04d}.dcm" for n in range(1, 5)]
    assert zipped.rel_paths[0] == "pacs/export.zip/series/S2_0001.dcm"
    # The archive's items are readable through the same safe extraction, with the series id.
    from mrisr.io import load

    with item_files(zipped) as files:
        assert all(f.is_file() for f in files)
        volume = load(files, series=zipped.series_id)
    assert volume.shape[-1] == 4
    assert not list(tree.parent.glob("staging2*"))


def test_ids_are_content_hashes_stable_across_runs(tree: Path, tmp_path: Path) -> None:
    first = {it.display: it.id for it in discover(tree)}
    assert first == {it.display: it.id for it in discover(tree)}
    assert len(set(first.values())) == len(first)
    # A copy elsewhere, renamed and touched: same content, same ids.
    copy = tmp_path / "copy"
    shutil.copytree(tree, copy)
    (copy / "sub-02" / "sub-02_T1w.nii").rename(copy / "sub-02" / "renamed.nii")
    assert sorted(it.id for it in discover(copy)) == sorted(first.values())
    # Changed bytes: a new id.
    _nifti(copy / "sub-02" / "renamed.nii", (10, 12, 20), (1.0, 1.0, 1.0), seed=99)
    assert {it.id for it in discover(copy)} != set(first.values())


def test_exact_duplicate_folders_stay_two_items_with_one_id(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _series(root / "a", 5, 3.0, "T2", 1, seed=1)
    shutil.copytree(root / "a", root / "b")
    items = discover(root)
    assert [it.display for it in items] == ["a", "b"]
    assert items[0].id == items[1].id and len(items[0].paths) == 5


def test_unsafe_zip_entry_refused_nothing_written_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _nifti(root / "ok.nii.gz", (4, 4, 3), (1, 1, 3))
    evil = root / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("series/IM_0001.dcm", b"x" * 200)
        zf.writestr("../escaped.txt", b"gotcha")
    with refused(InputError, r"unsafe archive entry '\.\./escaped\.txt'"):
        discover(root, strict=True)
    items = discover(root)
    bad = [it for it in items if it.error]
    assert len(bad) == 1 and bad[0].display == "evil.zip"
    assert "../escaped.txt" in bad[0].error and "unsafe archive entry" in bad[0].error
    assert [it.display for it in items if not it.error] == ["ok.nii.gz"]
    assert not (tmp_path / "escaped.txt").exists() and not (root.parent / "escaped.txt").exists()
    assert "ERROR: " in plan_table(items)
    # Absolute paths too.
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("/tmp/abs.txt", b"gotcha")
    with refused(InputError, "unsafe archive entry '/tmp/abs.txt'"):
        discover(evil, strict=True)


def test_broken_files_become_error_items(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _nifti(root / "good.nii.gz", (4, 4, 3), (1, 1, 3))
    (root / "broken.nii.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 10)
    (root / "junk.dcm").write_bytes(b"\x00" * 50)
    files = _series(root / "dcm", 4, 3.0, "T2", 1)
    files[1].write_bytes(files[1].read_bytes()[:400])  # a cut DICOM file spoils its folder
    _series(root / "fine", 4, 3.0, "T2", 1, seed=7)
    items = discover(root)
    errors = {it.display: it.error for it in items if it.error}
    assert set(errors) == {"broken.nii.gz", "dcm", "junk.dcm"}
    assert "broken gzip" in errors["broken.nii.gz"]
    assert errors["dcm"].startswith("dcm: ")  # the spoilt series is reported, not dropped
    assert {it.kind for it in items if it.display == "dcm"} == {"dicom"}
    assert [it.display for it in items if not it.error] == ["fine", "good.nii.gz"]
    with pytest.raises(InputError):
        discover(root, strict=True)


def test_filters(tree: Path) -> None:
    names = lambda **kw: [it.display for it in discover(tree, **kw)]  # noqa: E731
    assert names(include=["*.nii*"]) == ["sub-01/anat/sub-01_T2w.nii.gz", "sub-02/sub-02_T1w.nii"]
    assert names(include=["study/*"]) == ["study/dicom#3", "study/dicom#7"]
    assert names(exclude=["pacs/*", "sub-0*"]) == ["study/dicom#3", "study/dicom#7"]
    assert names(include=["*.dcm"], exclude=["*S7_*"]) == ["pacs/export.zip/series", "study/dicom#3"]
    # Description regex: SeriesDescription for DICOM, the file name for volume files.
    assert names(series_description=r"^T2") == ["study/dicom#3"]
    assert names(series_description=r"(?i)t2") == ["study/dicom#3", "sub-01/anat/sub-01_T2w.nii.gz"]
    assert names(modality="CT") == ["sub-01/anat/sub-01_T2w.nii.gz", "sub-02/sub-02_T1w.nii"]
    assert len(names(modality="mr")) == 5
    assert names(min_slices=10) == ["study/dicom#7", "sub-02/sub-02_T1w.nii"]
    assert names(min_through_plane_mm=3.0) == [
        "pacs/export.zip/series",
        "study/dicom#3",
        "sub-01/anat/sub-01_T2w.nii.gz",
    ]
    assert names(min_through_plane_mm=3.0, min_slices=5, include=["study/*"]) == ["study/dicom#3"]


def test_single_file_and_archive_roots(tree: Path) -> None:
    [one] = discover(tree / "sub-02" / "sub-02_T1w.nii")
    assert one.display == "sub-02_T1w.nii" and one.n_slices == 20
    [zipped] = discover(tree / "pacs" / "export.zip")
    assert zipped.display == "export.zip/series" and zipped.description == "FLAIR"
    with refused(InputError, "does not exist"):
        discover(tree / "missing")


def test_plan_table_and_json(tree: Path) -> None:
    items = discover(tree)
    table = plan_table(items)
    lines = table.splitlines()
    assert lines[0].split() == ["ID", "KIND", "SLICES", "SPACING_MM", "DESCRIPTION", "ITEM"]
    assert lines[-1] == "5 items"
    assert any("T2 AX thick" in line and line.endswith("study/dicom#3") and items[1].id[:12] in line for line in lines)
    plan = plan_json(items)
    assert json.loads(json.dumps(plan)) == plan
    assert [p["display"] for p in plan] == [it.display for it in items]
    entry = plan[1]
    assert entry["kind"] == "dicom" and entry["n_slices"] == 6 and entry["through_plane_mm"] == pytest.approx(5.0)
    assert entry["modality"] == "MR" and len(entry["paths"]) == 6 and entry["error"] is None
    assert plan_table([]).splitlines()[-1] == "0 items"


def test_skip_dirs(tree: Path) -> None:
    out = tree / "out"
    _nifti(out / "result.nii.gz", (4, 4, 3), (1, 1, 1))
    assert "out/result.nii.gz" in [it.display for it in discover(tree)]
    assert "out/result.nii.gz" not in [it.display for it in discover(tree, skip_dirs=[out])]
