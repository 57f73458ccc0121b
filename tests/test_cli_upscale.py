"""mrisr upscale and mrisr export-onnx through the CLI: outputs, sidecars, DICOM write-back."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from conftest import needs_dcm2niix, phantom
from dicom_factory import write_series

import mrisr
from mrisr.cli import main
from mrisr.models.card import save_checkpoint
from mrisr.nets import VDSR
from mrisr.volume import Volume, canonical, fov_affine, world_corners


@pytest.fixture
def model_card(tmp_path: Path) -> Path:
    import torch

    torch.manual_seed(0)
    return save_checkpoint(VDSR(2, features=4, depth=3), tmp_path / "model", {"note": "untrained, for geometry"})


def _run(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _lr(tmp_path: Path) -> tuple[Volume, Volume]:
    hr = phantom(5, seed=5, shape=(24, 20, 32), spacing=(1.0, 1.0, 1.0), dtype="int16")
    affine, shape = fov_affine(hr.affine, hr.shape, (1.0, 1.0, 4.0))
    data = hr.array.reshape(1, 24, 20, shape[2], 4).mean(-1)
    return hr, Volume(np.round(data).astype(np.float32), affine, {"dtype": "int16"})


def test_upscale_nifti_with_sidecar_and_json(capsys, tmp_path: Path, model_card: Path) -> None:
    hr, lr = _lr(tmp_path)
    src = mrisr.save(lr, tmp_path / "lr.nii.gz")
    code, out, err = _run(capsys, "upscale", src, "-o", tmp_path / "sr.nii.gz", "--model", model_card,
                          "--spacing", 1.0, "--device", "cpu", "--json")
    assert code == 0, err
    summary = json.loads(out)
    sr = mrisr.load(tmp_path / "sr.nii.gz")
    assert sr.shape == hr.shape
    np.testing.assert_allclose(sr.affine, hr.affine, atol=1e-4)
    side = json.loads((tmp_path / "sr.json").read_text())
    assert side == summary
    assert side["model"]["sha256"] and len(side["input"]["sources"][0]["sha256"]) == 64
    assert side["target_spacing_mm"] == pytest.approx([1.0, 1.0, 1.0]) and side["device"] == "cpu"
    code, _, err = _run(capsys, "upscale", src, "-o", tmp_path / "sr.nii.gz", "--model", model_card)
    assert code == 2 and "--force" in err and err.count("\n") == 1


def test_dicom_in_dicom_out_reads_the_same_in_simpleitk_and_dcm2niix(capsys, tmp_path: Path,
                                                                      model_card: Path) -> None:
    hr, lr = _lr(tmp_path)
    files = write_series(tmp_path / "lr_dicom", np.asarray(lr.array[0]).astype(np.int16), lr.affine)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert _run(capsys, "upscale", tmp_path / "lr_dicom", "-o", tmp_path / "sr_dicom", "--model", model_card,
                "--spacing", 1.0, "--device", "cpu")[0] == 0
    assert _run(capsys, "upscale", tmp_path / "lr_dicom", "-o", tmp_path / "sr.nii.gz", "--model", model_card,
                "--spacing", 1.0, "--device", "cpu")[0] == 0
    nifti = mrisr.load(tmp_path / "sr.nii.gz")
    out_files = sorted((tmp_path / "sr_dicom").iterdir())
    assert len(out_files) == nifti.shape[2]
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in out_files]
    assert {h.StudyInstanceUID for h in headers} == {source.StudyInstanceUID}
    assert {h.FrameOfReferenceUID for h in headers} == {source.FrameOfReferenceUID}
    assert headers[0].SeriesInstanceUID != source.SeriesInstanceUID
    assert len({h.SOPInstanceUID for h in headers}) == len(headers)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "sr_dicom")))
    image = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    sitk_corners = world_corners(np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, image.GetSize())

    def rows(a: np.ndarray) -> np.ndarray:
        return a[np.lexsort(np.round(a, 2).T[::-1])]

    np.testing.assert_allclose(rows(sitk_corners), rows(nifti.corners), atol=1e-4)
    exe = needs_dcm2niix()
    subprocess.run([exe, "-z", "n", "-b", "n", "-f", "d2n", "-o", str(tmp_path), str(tmp_path / "sr_dicom")],
                   check=True, capture_output=True)
    img = nib.load(tmp_path / "d2n.nii")
    d2n = canonical(Volume(np.asarray(img.dataobj, dtype=np.float32)[None], img.affine))
    np.testing.assert_allclose(d2n.affine, canonical(nifti).affine, atol=1e-4)


def test_export_onnx_cli(capsys, tmp_path: Path, model_card: Path) -> None:
    pytest.importorskip("onnxruntime")
    code, out, err = _run(capsys, "export-onnx", model_card, "-o", tmp_path / "m.onnx")
    assert code == 0, err and (tmp_path / "m.onnx").exists()
