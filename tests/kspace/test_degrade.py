"""degrade(): whole protocol acquisitions on Volumes: geometry, axes, determinism, identity."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import AXIS_ORDERS, phantom

from mrisr.kspace.degrade import acquisition_axes, degrade
from mrisr.protocol import load_protocol
from mrisr.volume import Volume, world_corners

SHAPE = (24, 20, 12)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("order", range(len(AXIS_ORDERS)))
@pytest.mark.parametrize("name", ["thick-slice-x4", "knee-pd-sagittal-3mm"])
def test_field_of_view_is_kept_in_every_axis_order(order: int, name: str) -> None:
    """The LR volume's 8 FOV corners equal the HR volume's (1e-4 mm), for all 48 signed axis orders,
    through-plane only (x4) and with an in-plane k-space crop onto the acquired grid (knee)."""
    hr = phantom(order, seed=order, shape=SHAPE, spacing=(0.9, 1.2, 0.8), dtype="float32")
    params = load_protocol(name).acquisition.nominal()
    if name == "knee-pd-sagittal-3mm":
        params = dataclasses.replace(params, in_plane_spacing_mm=1.6, snr=math.inf)
    lr = degrade(hr, params, _gen())
    np.testing.assert_allclose(lr.corners, hr.corners, atol=1e-4)
    axes = acquisition_axes(hr.affine, params.orientation, params.phase_encode)
    assert lr.shape[axes.slice] < hr.shape[axes.slice]
    if name == "knee-pd-sagittal-3mm":
        assert lr.shape[axes.phase] < hr.shape[axes.phase] and lr.shape[axes.read] < hr.shape[axes.read]


def test_axial_protocol_degrades_the_inferior_superior_axis() -> None:
    """An LIA volume (FreeSurfer-conformed, like the pycortex T1): axial slices run along voxel axis 1."""
    affine = np.array([[-1.0, 0, 0, 128], [0, 0, 1.0, -128], [0, -1.0, 0, 128], [0, 0, 0, 1]])
    hr = Volume(np.random.default_rng(0).random((1, 32, 40, 36), dtype=np.float32), affine)
    params = load_protocol("thick-slice-x4").acquisition.nominal()
    lr = degrade(hr, params, _gen())
    assert lr.shape == (32, 10, 36)
    assert lr.meta["degradation"]["slice_axis"] == 1
    np.testing.assert_allclose(lr.spacing, [1.0, 4.0, 1.0])


def test_identity_parameters_change_nothing() -> None:
    hr = phantom(5, shape=SHAPE, dtype="float32")
    params = dataclasses.replace(
        load_protocol("thick-slice-x4").acquisition.nominal(), slice_scale=1.0, profile="rect"
    )
    lr = degrade(hr, params, _gen())
    np.testing.assert_allclose(lr.array, hr.array, atol=1e-6 * float(np.abs(hr.array).max()))
    np.testing.assert_allclose(lr.affine, hr.affine, atol=1e-9)


def test_same_seed_same_bits_other_seed_other_output() -> None:
    hr = phantom(3, shape=SHAPE, dtype="float32")
    acquisition = load_protocol("lowfield-fast-6mm").acquisition
    a = degrade(hr, acquisition.sample(_gen(11)), _gen(11))
    b = degrade(hr, acquisition.sample(_gen(11)), _gen(11))
    c = degrade(hr, acquisition.sample(_gen(12)), _gen(12))
    assert np.array_equal(a.array, b.array)
    assert a.shape != c.shape or not np.array_equal(a.array, c.array)


def test_every_shipped_protocol_runs_nominal_and_sampled() -> None:
    hr = phantom(17, shape=(40, 36, 30), spacing=(0.5, 0.5, 0.5), dtype="float32")
    for protocol in ("brain-t1-axial-5mm", "brain-t2-fse-axial-5mm", "knee-pd-sagittal-3mm",
                     "lowfield-fast-6mm", "thick-slice-x4"):
        acquisition = load_protocol(protocol).acquisition
        for params in (acquisition.nominal(), acquisition.sample(_gen(3))):
            lr = degrade(hr, params, _gen(3))
            assert np.all(np.isfinite(lr.array)) and lr.array.dtype == np.float32
            np.testing.assert_allclose(lr.corners, hr.corners, atol=1e-4)
            assert lr.meta["degradation"]["profile"] == params.profile


def test_torch_in_torch_out_and_channels_alike() -> None:
    hr = phantom(0, shape=SHAPE, channels=2, dtype="float32")
    thr = hr.replace(array=torch.from_numpy(np.ascontiguousarray(hr.array)))
    params = load_protocol("thick-slice-x4").acquisition.nominal()
    lr = degrade(thr, params, _gen())
    assert isinstance(lr.array, torch.Tensor) and lr.n_channels == 2
    np.testing.assert_allclose(lr.array.numpy(), degrade(hr, params, _gen()).array, atol=1e-6)
    np.testing.assert_allclose(world_corners(lr.affine, lr.shape), hr.corners, atol=1e-4)


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    hr = phantom(9, shape=(48, 40, 30), spacing=(0.5, 0.5, 0.5), dtype="float32")
    params = load_protocol("brain-t1-axial-5mm").acquisition.sample(_gen(5))
    cpu = degrade(hr, params, _gen(5))
    gpu = degrade(hr, params, _gen(5), device="cuda")
    scale = float(np.abs(cpu.array).max())
    np.testing.assert_allclose(gpu.array, cpu.array, atol=1e-4 * scale)
