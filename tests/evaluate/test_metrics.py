"""mrisr.evaluate.metrics: analytical PSNR/NRMSE, SSIM bounds, masks, per-slice curves, grid checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mrisr.errors import InputError
from mrisr.evaluate import evaluate
from mrisr.volume import Volume
from tests.conftest import phantom, refused


def _ref() -> Volume:
    return phantom(shape=(24, 20, 14), dtype="float32")


def test_constant_offset_gives_analytical_psnr_and_nrmse() -> None:
    ref = _ref()
    e = 7.5
    pred = ref.replace(array=np.asarray(ref.array) + e)
    mask = np.zeros(ref.shape, bool)
    mask[4:20, 3:17, 2:12] = True
    m = evaluate(ref, pred, mask=mask)
    values = np.asarray(ref.array)[0][mask].astype(np.float64)
    r = values.max() - values.min()
    assert m["mse"] == pytest.approx(e**2, rel=1e-5)
    assert m["data_range"] == pytest.approx(r, rel=1e-6)
    assert m["psnr_db"] == pytest.approx(10 * math.log10(r**2 / e**2), abs=1e-3)
    assert m["nrmse"] == pytest.approx(e / r, rel=1e-5)
    # every slice has the same error, hence the same PSNR (on the volume's data range)
    curve = m["slice_psnr_db"]
    assert all(v is None for v in curve[:2] + curve[12:])
    assert np.allclose(curve[2:12], m["psnr_db"], atol=1e-3)


def test_ssim_is_one_for_identical_and_below_one_otherwise(rng: np.random.Generator) -> None:
    ref = _ref()
    same = evaluate(ref, ref)
    assert same["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert same["psnr_db"] == math.inf and same["nrmse"] == 0.0
    noisy = ref.replace(array=np.asarray(ref.array) + rng.normal(0, 50, ref.array.shape).astype(np.float32))
    m = evaluate(ref, noisy)
    assert m["ssim"] < 0.99
    assert m["psnr_db"] < same["psnr_db"]


def test_auto_mask_and_given_masks() -> None:
    ref = _ref()
    array = np.asarray(ref.array)
    expected = array[0] > 0.1 * np.quantile(array, 0.99)
    pred = ref.replace(array=array + 1.0)
    auto = evaluate(ref, pred)
    # the auto mask is the reference above 10 % of its 99th percentile (one voxel of quantile slack)
    assert abs(auto["mask_voxels"] - int(expected.sum())) <= 1
    assert 0 < auto["mask_fraction"] < 1
    box = np.zeros(ref.shape, bool)
    box[5:15, 4:12, 3:9] = True
    for mask in (box, box.astype(np.uint8)[None], ref.replace(array=box[None].astype(np.float32))):
        m = evaluate(ref, pred, mask=mask)
        assert m["mask_voxels"] == int(box.sum())
    with refused(InputError, "empty"):
        evaluate(ref, pred, mask=np.zeros(ref.shape, bool))
    with refused(InputError, "mask shape"):
        evaluate(ref, pred, mask=np.ones((3, 3, 3), bool))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_curve_has_one_value_per_slice(axis: int) -> None:
    ref = _ref()
    pred = ref.replace(array=np.asarray(ref.array) * 1.01)
    m = evaluate(ref, pred, axis=axis)
    assert m["axis"] == axis
    assert len(m["slice_psnr_db"]) == ref.shape[axis]
    assert all(v is None or np.isfinite(v) for v in m["slice_psnr_db"])


def test_slice_curve_finds_the_bad_slice() -> None:
    ref = _ref()
    array = np.asarray(ref.array).copy()
    array[..., 7] += 100.0
    m = evaluate(ref, ref.replace(array=array))
    curve = m["slice_psnr_db"]
    assert curve[7] is not None and all(v == math.inf for i, v in enumerate(curve) if i != 7 and v is not None)


def test_grid_mismatch_is_one_line_naming_both_files() -> None:
    ref = _ref().replace(meta={"source_paths": ["/data/hr.nii.gz"]})
    shifted = np.array(ref.affine)
    shifted[:3, 3] += 0.01
    pred = ref.replace(affine=shifted, meta={"source_paths": ["/data/sr.nii.gz"]})
    coarse = phantom(shape=(24, 20, 7), dtype="float32").replace(meta={"source_paths": ["/data/sr.nii.gz"]})
    for other in (pred, coarse):
        with pytest.raises(InputError) as err:
            evaluate(ref, other)
        text = str(err.value)
        assert "\n" not in text and "hr.nii.gz" in text and "sr.nii.gz" in text and "resample" in text
    # within 1e-3 mm is the same grid
    close = np.array(ref.affine)
    close[:3, 3] += 2e-4
    assert evaluate(ref, ref.replace(affine=close))["ssim"] == pytest.approx(1.0, abs=1e-5)


def test_bad_axis_is_refused() -> None:
    ref = _ref()
    with refused(InputError, "axis"):
        evaluate(ref, ref, axis=3)


def _write_pair(tmp_path):  # noqa: ANN001, ANN202
    from mrisr.io import save

    ref = _ref()
    hr = save(ref, tmp_path / "hr.nii.gz")
    sr = save(ref.replace(array=np.asarray(ref.array) + 3.0), tmp_path / "sr.nii.gz")
    return ref, hr, sr


def test_cli_json_keys(tmp_path, capsys: pytest.CaptureFixture) -> None:  # noqa: ANN001
    import json

    from mrisr import cli

    _, hr, sr = _write_pair(tmp_path)
    capsys.readouterr()
    assert cli.main(["evaluate", "--reference", str(hr), "--prediction", str(sr), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"reference", "prediction", "mask", "psnr_db", "ssim", "nrmse", "mse", "data_range", "mask_voxels",
            "axis", "slice_psnr_db"} <= set(out)
    assert out["mse"] == pytest.approx(9.0, rel=1e-4)
    assert len(out["slice_psnr_db"]) == 14
    assert cli.main(["evaluate", "--reference", str(hr), "--prediction", str(hr), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["psnr_db"] == "inf"
    assert cli.main(["evaluate", "--reference", str(hr), "--prediction", str(sr)]) == 0
    table = capsys.readouterr().out
    assert "PSNR" in table and "prediction" in table


def test_cli_grid_mismatch_exits_2_with_one_line(tmp_path, capsys: pytest.CaptureFixture) -> None:  # noqa: ANN001
    from mrisr import cli
    from mrisr.io import save

    _, hr, _ = _write_pair(tmp_path)
    other = save(phantom(shape=(24, 20, 7), dtype="float32"), tmp_path / "coarse.nii.gz")
    capsys.readouterr()
    assert cli.main(["evaluate", "--reference", str(hr), "--prediction", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "hr.nii.gz" in err and "coarse.nii.gz" in err and "resample" in err
