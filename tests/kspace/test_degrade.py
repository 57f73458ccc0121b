"""degrade(): whole protocol acquisitions on Volumes: geometry, axes, determinism, identity."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import AXIS_ORDERS, phantom

from mrisr.kspace.degrade import acquisition_axes, degrade, segment_layout
from mrisr.kspace.fft import to_image, to_kspace
from mrisr.kspace.motion import motion_kspace
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


# --- physics of the single k-space acquisition (review findings) ------------------------------



def _axial_volume(shape=(64, 60, 24), value=None, seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    data = rng.random((1, *shape), dtype=np.float32) * 100 + 500 if value is None else np.full((1, *shape), value,
                                                                                               np.float32)
    return Volume(data, np.diag([1.0, 1.0, 1.0, 1.0]))


def _params(**changes):
    base = load_protocol("lowfield-fast-6mm").acquisition.nominal()
    return dataclasses.replace(base, **{"snr": math.inf, "motion_translation_mm": 0.0, "motion_rotation_deg": 0.0,
                                        **changes})


def test_partial_fourier_and_undersampling_count_acquired_lines() -> None:
    """They act on the m acquired phase-encode lines, not on the zero-filled grid's n lines."""
    hr = _axial_volume()
    full = degrade(hr, _params(partial_fourier=1.0, window="none"), _gen())
    pf = degrade(hr, _params(partial_fourier=0.75, window="none"), _gen())
    m = full.meta["degradation"]["acquired_lines"]
    assert m == 32  # phase encode LR = voxel axis 0: 64 lines of 1 mm acquired at 2 mm
    assert pf.meta["degradation"]["acquired_lines"] == math.ceil(0.75 * m)
    assert np.abs(pf.array - full.array).max() > 1e-2 * np.abs(full.array).max()
    us = degrade(hr, _params(partial_fourier=1.0, acceleration=3.0, center_fraction=0.1,
                             undersampling_kind="equispaced"), _gen())
    assert us.meta["degradation"]["acquired_lines"] == round(m / 3)


def test_noise_lives_in_the_acquired_window_only() -> None:
    """Zero-filled reconstruction: the noise spectrum is confined to the acquired k-space window,
    as on a scanner (white noise on the final grid would fill the rest too)."""
    hr = _axial_volume(value=1000.0)
    params = _params(snr=20.0, window="none", partial_fourier=1.0)
    clean = degrade(hr, dataclasses.replace(params, snr=math.inf), _gen())
    noisy = degrade(hr, params, _gen(1))
    spectrum = to_kspace(torch.from_numpy(noisy.array - clean.array).double(), (-3, -2)).abs() ** 2
    axes = noisy.meta["degradation"]["in_plane_axes"]
    inside = torch.zeros_like(spectrum, dtype=torch.bool)
    index = [slice(None)] * 4
    for a, m in zip(axes, noisy.meta["degradation"]["acquired_matrix"], strict=True):
        n = noisy.shape[a]
        index[a + 1] = slice(n // 2 - m // 2, n // 2 - m // 2 + m)
    inside[tuple(index)] = True
    assert float(spectrum[~inside].sum() / spectrum.sum()) < 0.05
    # and the acquired image has the requested SNR
    flat = noisy.array[0, 8:-8, 8:-8, :]
    assert abs(flat.mean() / flat.std() - 20.0) / 20.0 < 0.1


def test_one_noise_sigma_for_all_channels() -> None:
    hr = _axial_volume(value=100.0)
    two = hr.replace(array=np.concatenate([hr.array, 10 * hr.array]))
    out = degrade(two, _params(snr=20.0, window="none", partial_fourier=1.0), _gen(2))
    stds = [float((out.array[c] - out.array[c].mean()).std()) for c in range(2)]
    assert abs(stds[0] - stds[1]) / stds[0] < 0.1


def test_segment_layout_reference_band_on_dc() -> None:
    layout = segment_layout(197, 49, 99, 4)
    assert int(layout[197 // 2]) == 0 and torch.all(layout[:49] == 0) and torch.all(layout[148:] == 0)
    counts = torch.bincount(layout[49:148], minlength=4)
    assert int(counts.min()) >= 99 // 4 - 2 and int(counts.max()) <= 99 // 4 + 2
    assert torch.all(segment_layout(64, 0, 64, 1) == 0)


def test_motion_keeps_the_image_in_place() -> None:
    """All non-reference shots moved +4 mm: the reference shot holds the lines around DC, which
    stay exactly as acquired, so the image is not displaced the way a shot starting at DC does."""
    from mrisr.kspace.motion import contiguous_segments

    x = torch.zeros(1, 96, 64, dtype=torch.float64)
    x[0, 30:66, 20:44] = 1.0
    pos = torch.arange(96, dtype=torch.float64)

    def centroid(img: torch.Tensor) -> float:
        return float((img.sum((0, 2)) * pos).sum() / img.sum())

    for n_seg in (4, 8):
        trans = torch.zeros(n_seg, 2, dtype=torch.float64)
        trans[1:, 0] = 4.0
        layout = segment_layout(96, 0, 96, n_seg)
        k = motion_kspace(x, pe_axis=-2, plane_axes=(-2, -1), translations_mm=trans,
                          rotations_deg=torch.zeros(n_seg), spacing_mm=(1.0, 1.0), segment_of_line=layout)
        still = layout == 0
        torch.testing.assert_close(k[:, still], to_kspace(x, (-2, -1))[:, still], atol=1e-10, rtol=0)
        ours = abs(centroid(to_image(k, (-2, -1)).abs()) - centroid(x))
        naive_trans = torch.zeros(n_seg, 2, dtype=torch.float64)
        naive_trans[torch.arange(n_seg) != n_seg // 2, 0] = 4.0  # reference = the shot starting at DC
        naive = motion_kspace(x, pe_axis=-2, plane_axes=(-2, -1), translations_mm=naive_trans,
                              rotations_deg=torch.zeros(n_seg), spacing_mm=(1.0, 1.0),
                              segment_of_line=contiguous_segments(96, n_seg))
        shifted = abs(centroid(to_image(naive, (-2, -1)).abs()) - centroid(x))
        assert ours < shifted, (ours, shifted)


def test_slices_finer_than_the_input_are_refused_and_outputs_never_share_storage() -> None:
    from mrisr.errors import InputError

    hr = _axial_volume()
    with pytest.raises(InputError, match="finer than the input"):
        degrade(hr, _params(thickness_mm=0.5, slice_spacing_mm=0.5), _gen())
    same = degrade(hr, dataclasses.replace(load_protocol("thick-slice-x4").acquisition.nominal(), slice_scale=1.0),
                   _gen())
    assert not np.shares_memory(same.array, hr.array)
