"""mrisr simulate / mrisr protocols through the CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import phantom

import mrisr
from mrisr.cli import main


@pytest.fixture
def hr_path(tmp_path: Path) -> Path:
    vol = phantom(6, shape=(40, 36, 32), spacing=(0.6, 0.6, 0.6), dtype="int16")
    return mrisr.save(vol, tmp_path / "hr.nii.gz")


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_simulate_writes_lr_and_sidecar(capsys, tmp_path: Path, hr_path: Path) -> None:
    out = tmp_path / "lr.nii.gz"
    code, stdout, err = _run(capsys, "simulate", hr_path, "-o", out, "--protocol", "brain-t1-axial-5mm",
                             "--seed", 3, "--random")
    assert code == 0, err
    assert "lr.json" in stdout
    lr, hr = mrisr.load(out), mrisr.load(hr_path)
    np.testing.assert_allclose(lr.corners, hr.corners, atol=1e-4)
    side = json.loads((tmp_path / "lr.json").read_text())
    assert side["seed"] == 3 and side["protocol"]["name"] == "brain-t1-axial-5mm" and not side["nominal"]
    assert side["parameters"]["orientation"] == "axial" and len(side["input"]["sha256"]) == 64
    assert side["output"]["shape"] == list(lr.shape)
    np.testing.assert_allclose(side["parameters"]["effective_spacing_mm"], lr.spacing, atol=1e-5)


def test_same_seed_same_output_and_nominal_is_fixed(capsys, tmp_path: Path, hr_path: Path) -> None:
    arrays = []
    for name, extra in (("a", ["--seed", 9]), ("b", ["--seed", 9]), ("c", ["--seed", 10])):
        assert _run(capsys, "simulate", hr_path, "-o", tmp_path / f"{name}.nii.gz", "--protocol",
                    "lowfield-fast-6mm", *extra)[0] == 0
        arrays.append(np.asarray(mrisr.load(tmp_path / f"{name}.nii.gz").array))
    assert np.array_equal(arrays[0], arrays[1])
    assert arrays[0].shape != arrays[2].shape or not np.array_equal(arrays[0], arrays[2])
    assert _run(capsys, "simulate", hr_path, "-o", tmp_path / "n.nii.gz", "--protocol", "thick-slice-x4",
                "--nominal")[0] == 0
    side = json.loads((tmp_path / "n.json").read_text())
    assert side["nominal"] and side["parameters"]["slice_scale"] == 4.0 and isinstance(side["seed"], int)


def test_existing_outputs_need_force(capsys, tmp_path: Path, hr_path: Path) -> None:
    out = tmp_path / "lr.nrrd"
    args = ["simulate", hr_path, "-o", out, "--protocol", "thick-slice-x4"]
    assert _run(capsys, *args)[0] == 0
    code, _, err = _run(capsys, *args)
    assert code == 2 and err.count("\n") == 1 and "--force" in err
    assert _run(capsys, *args, "--force")[0] == 0


def test_bad_protocol_is_one_line(capsys, tmp_path: Path, hr_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nname: x\ndescription: y\nacquisition:\n  orientation: axial\n"
                   "  slice: {profile: rect, thickness_mm: -1}\n")
    code, _, err = _run(capsys, "simulate", hr_path, "-o", tmp_path / "x.nii.gz", "--protocol", bad)
    assert code == 2 and err.count("\n") == 1
    assert "acquisition.slice.thickness_mm" in err and "bad.yaml" in err and "Traceback" not in err
    assert not (tmp_path / "x.nii.gz").exists()
    code, _, err = _run(capsys, "simulate", hr_path, "-o", tmp_path / "x.nii.gz", "--protocol", "no-such")
    assert code == 2 and "thick-slice-x4" in err


def test_protocols_lists_the_shipped_ones(capsys) -> None:
    code, out, _ = _run(capsys, "protocols")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert {"brain-t1-axial-5mm", "thick-slice-x4", "knee-pd-sagittal-3mm"} <= set(names)


@pytest.mark.parametrize(("flag", "value", "word"), [("--device", "gpu", "device"), ("--device", "meta", "device"),
                                                     ("--device", "cuda:7", "CUDA"),
                                                     ("--seed", "99999999999999999999999", "seed")])
def test_bad_device_and_seed_are_one_line(capsys, tmp_path: Path, hr_path: Path, flag: str, value: str,
                                          word: str) -> None:
    code, _, err = _run(capsys, "simulate", hr_path, "-o", tmp_path / "x.nii.gz", "--protocol", "thick-slice-x4",
                        flag, value)
    assert code == 2 and err.count("\n") == 1 and word in err and "internal error" not in err


def test_existing_image_without_sidecar_is_refused_before_any_work(capsys, tmp_path: Path, hr_path: Path) -> None:
    out = tmp_path / "lr.nii.gz"
    out.write_bytes(b"someone's file")
    code, _, err = _run(capsys, "simulate", hr_path, "-o", out, "--protocol", "thick-slice-x4")
    assert code == 2 and "--force" in err and out.read_bytes() == b"someone's file"
    assert not (tmp_path / "lr.json").exists()
