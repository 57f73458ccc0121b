"""resolve_model: the shipped default for an input's voxel spacing (mm), any axis order, oblique too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import AXIS_ORDERS, phantom, phantom_affine, refused

import mrisr
from mrisr import cli
from mrisr.errors import InputError
from mrisr.export import sidecar_path
from mrisr.infer import target_grid
from mrisr.models import ANISOTROPIC, THICK_SLICE, default_model_name, registry, resolve_model
from mrisr.models.card import save_checkpoint
from mrisr.nets import VDSR
from mrisr.volume import Volume

# (spacing in mm, sorted as in-plane, in-plane, slice; expected default)
CASES = [
    ((1.0, 1.0, 4.0), THICK_SLICE),
    ((0.9, 0.9, 5.0), THICK_SLICE),
    ((0.45, 0.45, 3.0), THICK_SLICE),  # knee PD sagittal
    ((0.9375, 0.9375, 6.0), THICK_SLICE),
    ((1.0, 1.0, 1.5), THICK_SLICE),  # the ratio bound is inclusive
    ((1.0, 1.2, 4.0), THICK_SLICE),  # in-plane nearly equal (1.2 <= 1.25)
    ((1.4, 1.4, 5.0), THICK_SLICE),  # the in-plane bound is inclusive
    ((2.0, 2.0, 4.0), ANISOTROPIC),  # in-plane coarse too
    ((1.5, 1.5, 6.0), ANISOTROPIC),
    ((2.0, 2.0, 6.0), ANISOTROPIC),  # low-field
    ((1.0, 1.0, 1.4), ANISOTROPIC),  # mildly anisotropic
    ((1.0, 1.0, 1.0), ANISOTROPIC),  # isotropic
    ((1.5, 1.5, 1.5), ANISOTROPIC),  # isotropic coarse
    ((0.5, 0.8, 4.0), ANISOTROPIC),  # unequal in-plane spacings
    ((1.0, 2.0, 4.0), ANISOTROPIC),  # two coarse axes
]


def _volume(spacing: tuple[float, float, float], order: int = 0, shape: tuple[int, int, int] = (4, 5, 3),
            oblique: float = 20.0) -> Volume:
    return Volume(np.zeros((1, *shape), np.float32), phantom_affine(order, order, spacing, oblique))


@pytest.mark.parametrize(("sorted_spacing", "expected"), CASES)
def test_rule_in_every_axis_order(sorted_spacing, expected, monkeypatch):
    monkeypatch.setattr(registry, "shipped_models", lambda: {THICK_SLICE: None, ANISOTROPIC: None})
    for order in range(0, len(AXIS_ORDERS), 5):  # the slice axis lands on each voxel axis, flipped and oblique
        perm = [(order + k) % 3 for k in range(3)]  # voxel axis of each sorted spacing
        spacing = [0.0, 0.0, 0.0]
        for value, axis in zip(sorted_spacing, perm, strict=True):
            spacing[axis] = value
        volume = _volume(tuple(spacing), order)
        assert np.allclose(volume.spacing, spacing)
        assert default_model_name(volume.spacing, volume.shape) == expected, (spacing, order)
        assert resolve_model(None, volume) == expected


def test_single_images_get_the_2d_model():
    assert default_model_name([1.0, 1.0, 1.0], (64, 64, 1)) == THICK_SLICE
    assert default_model_name([2.0, 2.0, 4.0], (1, 64, 64)) == THICK_SLICE
    # the single-voxel axis does not count as the coarse one
    assert default_model_name([1.0, 1.0, 8.0], (64, 64, 1)) == THICK_SLICE


def test_a_given_model_is_returned_unchanged(tmp_path):
    volume = _volume((1.0, 1.0, 4.0))
    net = VDSR(2, features=2, depth=2)
    assert resolve_model(net, volume) is net
    assert resolve_model("anything", volume) == "anything"
    assert resolve_model(tmp_path, volume) is tmp_path


def test_missing_default_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path)  # an empty registry
    with refused(InputError, r"'vdsr2d-thick', is not shipped \(shipped: none\)") as caught:
        resolve_model(None, _volume((1.0, 1.0, 4.0)))
    assert caught.value.path == "--model" and "mrisr models" in caught.value.fix
    (tmp_path / "vdsr2d-thick.json").write_text("{}")
    assert resolve_model(None, _volume((1.0, 1.0, 4.0))) == THICK_SLICE
    with refused(InputError, r"'vdsr3d', is not shipped \(shipped: vdsr2d-thick\)"):
        resolve_model(None, _volume((2.0, 2.0, 4.0)))


# --------------------------------------------------------------------------- mrisr upscale without --model


def _thick_slice_file(tmp_path, order: int = 7) -> tuple[Path, Volume]:
    """An oblique 1 x 4 x 1 mm scan: the thick axis is voxel axis Y (the default must not assume Z)."""
    lr = phantom(order, seed=order, shape=(16, 4, 12), spacing=(1.0, 4.0, 1.0), dtype="float32")
    path = mrisr.save(lr, tmp_path / "lr.nii.gz")
    return path, mrisr.load(path)


def test_cli_upscale_without_model_writes_the_fov_preserving_isotropic_grid(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "models"
    monkeypatch.setattr(registry, "MODELS_DIR", folder)
    path, lr = _thick_slice_file(tmp_path)
    assert default_model_name(lr.spacing, lr.shape) == THICK_SLICE
    out = tmp_path / "sr.nii.gz"
    assert cli.main(["upscale", str(path), "-o", str(out), "--device", "cpu", "--quiet"]) == 2
    assert "'vdsr2d-thick', is not shipped" in capsys.readouterr().err and not out.exists()

    torch.manual_seed(0)
    card = save_checkpoint(VDSR(2, features=4, depth=2), folder, {"name": THICK_SLICE}, name=THICK_SLICE)
    assert cli.main(["upscale", str(path), "-o", str(out), "--device", "cpu", "--quiet"]) == 0
    sr = mrisr.load(out)
    affine, shape = target_grid(lr.affine, lr.shape)
    assert sr.shape == shape and np.allclose(sr.spacing, 1.0, atol=1e-4)  # isotropic at the finest spacing
    np.testing.assert_allclose(sr.affine, affine, atol=1e-4)
    np.testing.assert_allclose(sr.corners, lr.corners, atol=1e-3)  # the same field of view
    sidecar = json.loads(sidecar_path(out).read_text())
    expected_sha = json.loads(card.read_text())["weights"]["sha256"]
    assert THICK_SLICE in json.dumps(sidecar["model"]) and sidecar["model"]["sha256"] == expected_sha


@pytest.mark.skipif(THICK_SLICE not in registry.shipped_models(), reason=f"{THICK_SLICE} is not shipped here")
def test_cli_upscale_with_the_real_default(tmp_path):
    path, lr = _thick_slice_file(tmp_path, order=3)
    out = tmp_path / "sr.nii.gz"
    assert cli.main(["upscale", str(path), "-o", str(out), "--device", "cpu", "--quiet"]) == 0
    sr = mrisr.load(out)
    assert sr.shape == target_grid(lr.affine, lr.shape)[1] and np.all(np.isfinite(np.asarray(sr.array)))
    np.testing.assert_allclose(sr.corners, lr.corners, atol=1e-3)
    sidecar = json.loads(sidecar_path(out).read_text())
    card = json.loads(registry.shipped_models()[THICK_SLICE].read_text())
    assert sidecar["model"]["sha256"] == card["weights"]["sha256"]
