"""upscale() does not mislead: magnitude stays non-negative, a same-grid run is never silent,
and the progress bar counts planes or windows with an ETA."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from mrisr.infer import upscale
from mrisr.infer.job import upscale_file
from mrisr.io import save
from mrisr.nets import VDSR
from mrisr.volume import Volume


def _zero_residual(dims: int) -> VDSR:
    """A VDSR whose residual is exactly zero: it returns its (cubic pre-upsampled) input."""
    net = VDSR(dims, features=4, depth=3).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    return net


def _block(shape=(12, 12, 4), spacing=(1.0, 1.0, 4.0), value=1000.0, offset=0.0) -> Volume:
    """A bright box on a zero (air) background: cubic interpolation rings below zero at its edges."""
    array = np.full((1, *shape), offset, dtype=np.float32)
    array[0, 3:9, 3:9, 1:3] = value
    return Volume(array, np.diag([*spacing, 1.0]), {"dtype": "int16"})


@pytest.mark.parametrize("dims", [2, 3])
def test_magnitude_input_gives_non_negative_output(dims):
    low = _block()
    out = upscale(low, _zero_residual(dims), device="cpu", roi_size=None if dims == 2 else (12, 12, 16))
    record = out.meta["upscale"]
    assert record["non_negative_input"] is True
    assert record["clipped_below_zero"] > 0, "the cubic interpolant of a sharp box must overshoot below zero"
    assert float(np.min(out.array)) >= 0.0
    assert out.meta["range"][0] >= 0.0


def test_signed_input_is_not_clipped():
    low = _block(offset=-50.0)  # e.g. a difference image: negative values are real
    out = upscale(low, _zero_residual(2), device="cpu")
    assert out.meta["upscale"]["non_negative_input"] is False
    assert out.meta["upscale"]["clipped_below_zero"] == 0
    assert float(np.min(out.array)) < -50.0  # the overshoot is left as it is


def test_same_grid_warns_and_says_what_ran():
    image = Volume(np.random.default_rng(0).uniform(0, 100, (1, 16, 12, 1)).astype(np.float32),
                   np.diag([0.8, 0.8, 5.0, 1.0]), {})  # a single 2D image: nothing to upscale
    with pytest.warns(UserWarning, match="nothing to upscale"):
        out = upscale(image, _zero_residual(2), device="cpu")
    assert out.shape == image.shape
    record = out.meta["upscale"]
    assert record["identity_grid"] is True
    assert "nothing upscaled" in record["ran"]


def test_a_real_upscale_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = upscale(_block(), _zero_residual(2), device="cpu")
    assert out.meta["upscale"]["identity_grid"] is False
    assert "super-resolution" in out.meta["upscale"]["ran"]


def test_sidecar_says_what_ran(tmp_path):
    image = Volume(np.random.default_rng(0).uniform(0, 100, (1, 16, 12, 1)).astype(np.float32),
                   np.diag([0.8, 0.8, 5.0, 1.0]), {})
    source = save(image, tmp_path / "image.nii.gz")
    from mrisr.models.loaded import LoadedModel

    model = LoadedModel(_zero_residual(2), {}, "zero", "cpu")
    with pytest.warns(UserWarning, match="nothing to upscale"):
        summary = upscale_file(source, tmp_path / "out.nii.gz", model=model, device="cpu")
    sidecar = json.loads((tmp_path / "out.json").read_text())
    assert sidecar["upscale"]["identity_grid"] is True
    assert "nothing upscaled" in sidecar["upscale"]["ran"]
    assert summary["upscale"] == sidecar["upscale"]


@pytest.mark.parametrize(("dims", "unit", "total"), [(2, "plane", 12 + 12), (3, "window", 8)])
def test_progress_counts_planes_or_windows(capsys, dims, unit, total):
    low = _block(shape=(12, 12, 4))  # -> 12 x 12 x 16: 2D fuses two families of 12 planes each
    roi = None if dims == 2 else (8, 8, 8)  # 3D: 2 x 2 x 2 windows at overlap 0
    upscale(low, _zero_residual(dims), device="cpu", roi_size=roi, overlap=0.0, progress=True)
    err = capsys.readouterr().err
    assert f"/{total} [" in err and (f"{unit}/s" in err or f"s/{unit}" in err), err
    assert f"{total}/{total}" in err, err  # the bar reached its end
    assert "<" in err  # tqdm's elapsed<remaining: the ETA


def test_progress_never_stops_an_upscale(monkeypatch, capsys):
    """The window count comes from MONAI's private helpers; if they change, the bar is open-ended,
    the upscale runs on (and without progress the count is never asked for)."""
    from mrisr.infer import runner

    def changed(*args, **kwargs):
        raise ImportError("MONAI moved its helper")

    monkeypatch.setattr(runner, "_window_count", changed)
    low = _block(shape=(12, 12, 4))
    for progress in (True, False):
        out = upscale(low, _zero_residual(3), device="cpu", roi_size=(8, 8, 8), progress=progress)
        assert out.shape == (12, 12, 16)
    assert "window" in capsys.readouterr().err
