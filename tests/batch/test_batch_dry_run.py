"""mrisr batch --dry-run, as a table and as JSON: each item's output path (OUT included), readable
item names (never '.', never a bare UID), and a 2D image's spacing as mrisr info gives it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from batch_data import nifti, series, tiny_model
from conftest import info_json

from mrisr.cli import main


def _run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _table(text: str) -> dict[str, list[str]]:
    """ITEM -> the row's cells, read at the header's column starts."""
    lines = text.splitlines()
    header = lines[0]
    names = header.split()
    starts = [header.index(n) for n in names]
    rows = {}
    for line in lines[1:-1]:
        cells = [line[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
        rows[cells[names.index("ITEM")]] = cells
    assert names[:8] == ["KEY", "KIND", "SLICES", "SPACING_MM", "ACTION", "ITEM", "OUTPUT", "NOTE"], header
    return rows


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A series in the root itself, two series in one folder (one without a SeriesNumber), a
    NIfTI file, its exact copy, a corrupt file."""
    root = tmp_path / "root"
    series(root, 1, number=3, description="T2 AX")
    series(root / "two", 2, number=4, description="T1 SAG")
    series(root / "two", 3, number=None, description="T2/COR thin")
    nifti(root / "a" / "one.nii.gz", 4)
    (root / "b").mkdir()
    (root / "b" / "copy.nii.gz").write_bytes((root / "a" / "one.nii.gz").read_bytes())
    (root / "bad.nii.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    return root


def test_table_shows_output_paths_and_readable_names(capsys, tmp_path: Path, root: Path) -> None:
    out = tmp_path / "out"
    code, text, err = _run(capsys, "batch", root, "-o", out, "--dry-run")
    assert code == 0, err
    rows = _table(text)
    output = {name: cells[6] for name, cells in rows.items()}
    assert output == {
        "series-3_T2_AX": str(out / "series-3_T2_AX.nii.gz"),  # a series in the root: named, not '.'
        "two#4": str(out / "two" / "series-4_T1_SAG.nii.gz"),
        "two#T2_COR_thin": output["two#T2_COR_thin"],  # no SeriesNumber: its description, not its UID
        "a/one.nii.gz": str(out / "a" / "one.nii.gz"),
        "b/copy.nii.gz": str(out / "a" / "one.nii.gz"),  # a duplicate: done once, into its original's output
        "bad.nii.gz": "-",
    }
    assert output["two#T2_COR_thin"].startswith(str(out / "two" / "series-"))
    assert rows["b/copy.nii.gz"][4] == "skip" and rows["b/copy.nii.gz"][7] == "(duplicate of a/one.nii.gz)"
    assert rows["bad.nii.gz"][4] == "fail" and "broken gzip" in rows["bad.nii.gz"][7]
    assert rows["a/one.nii.gz"][7] == ""


def test_names_under_several_inputs(capsys, tmp_path: Path, root: Path) -> None:
    other = tmp_path / "t2"
    series(other, 9, number=7, description="T2 SAG")
    code, text, err = _run(capsys, "batch", other, root / "two", "-o", tmp_path / "out", "--dry-run", "--json")
    assert code == 0, err
    names = [i["display"] for i in json.loads(text)["items"]]
    assert names == ["t2/series-7_T2_SAG", "two/series-4_T1_SAG", "two/series_T2_COR_thin"]
    assert not [n for n in names if n == "." or n.endswith("/.") or "1.2." in n]


def test_json_output_paths(capsys, tmp_path: Path, root: Path) -> None:
    out = tmp_path / "out"
    code, text, err = _run(capsys, "batch", root, "-o", out, "--dry-run", "--json")
    assert code == 0, err
    items = {i["display"]: i for i in json.loads(text)["items"]}
    assert "." not in items and not [n for n in items if "1.2." in n]
    assert items["series-3_T2_AX"]["output"] == "series-3_T2_AX.nii.gz"
    assert items["series-3_T2_AX"]["output_path"] == os.path.abspath(out / "series-3_T2_AX.nii.gz")
    assert items["series-3_T2_AX"]["description"] == "T2 AX" and items["series-3_T2_AX"]["series_number"] == 3
    assert items["b/copy.nii.gz"]["output_path"] == os.path.abspath(out / "a" / "one.nii.gz")
    assert items["bad.nii.gz"]["output"] is None and items["bad.nii.gz"]["output_path"] is None


def test_root_series_still_lands_where_it_did(capsys, tmp_path: Path, root: Path) -> None:
    """Naming the root's series readably moved no output: it is OUT/series-<n>_<description>."""
    out = tmp_path / "out"
    card = tiny_model(tmp_path / "model")
    code, _, err = _run(capsys, "batch", root, "-o", out, "--model", card, "--workers", 0, "--quiet",
                        "--include", "*S3_*")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith("mrisr-")) == [
        "series-3_T2_AX.json", "series-3_T2_AX.nii.gz"]
    code, text, _ = _run(capsys, "batch", root, "-o", out, "--model", card, "--dry-run", "--include", "*S3_*")
    rows = _table(text)
    assert rows["series-3_T2_AX"][6] == str(out / "series-3_T2_AX.nii.gz")
    assert rows["series-3_T2_AX"][7] == "(done earlier)"


def test_2d_spacing_matches_info(capsys, tmp_path: Path) -> None:
    """A 2D NIfTI's singleton axis has the spacing its affine gives (5 mm here), as mrisr info says;
    pixdim lists none for it. A header whose pixdim disagrees with its sform: the sform, too."""
    folder = tmp_path / "in"
    folder.mkdir()
    data = np.random.default_rng(0).integers(0, 1000, (16, 12)).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.9375, 5.0, 1.0])), folder / "slice.nii.gz")
    odd = nib.Nifti1Image(np.zeros((6, 6, 4), np.int16), np.diag([1.0, 1.0, 2.5, 1.0]))
    odd.header.set_zooms((1.0, 1.0, 1.0))  # pixdim says 1 mm; the sform (code 2) says 2.5 mm
    odd.set_sform(np.diag([1.0, 1.0, 2.5, 1.0]), code=2)
    odd.set_qform(None, code=0)
    nib.save(odd, folder / "odd.nii.gz")
    code, text, err = _run(capsys, "batch", folder, "-o", tmp_path / "out", "--dry-run", "--json")
    assert code == 0, err
    items = {i["display"]: i for i in json.loads(text)["items"]}
    for name in ("slice.nii.gz", "odd.nii.gz"):
        info = info_json(capsys, folder / name)
        assert items[name]["spacing"] == pytest.approx(info["spacing"], abs=1e-6), name
        assert items[name]["shape"] == info["shape"]
    assert items["slice.nii.gz"]["spacing"] == pytest.approx([0.8, 0.9375, 5.0])
    assert items["slice.nii.gz"]["through_plane_mm"] == pytest.approx(5.0) and items["slice.nii.gz"]["n_slices"] == 1
    code, text, _ = _run(capsys, "batch", folder, "-o", tmp_path / "out", "--dry-run")
    assert _table(text)["slice.nii.gz"][3] == "0.8x0.9375x5"
