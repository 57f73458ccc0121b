"""Rigid motion between k-space segments: ghosts along the PE axis only, exact shifts and
rotations, the segment ordering, identity, determinism, errors."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import refused

from mrisr.errors import InputError
from mrisr.kspace.motion import contiguous_segments, motion, random_motion_parameters


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def box_image(shape: tuple[int, ...], lo: int, hi: int) -> torch.Tensor:
    """``(1, *shape)``: a bright box over indices ``lo:hi`` on every spatial axis, zero elsewhere."""
    image = torch.zeros(1, *shape, dtype=torch.float64)
    image[(slice(None), *[slice(lo, hi)] * len(shape))] = 100.0
    return image


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize(
    "shape, pe_axis, plane_axes",
    [
        ((96, 96), -1, (-2, -1)),
        ((96, 96), -2, (-2, -1)),
        ((48, 48, 48), -1, (-3, -2)),
        ((48, 48, 48), -3, (-2, -1)),
        ((48, 48, 48), -2, (-3, -1)),
    ],
)
def test_ghosts_appear_along_the_pe_axis_only(
    shape: tuple[int, ...], pe_axis: int, plane_axes: tuple[int, int], interleaved: bool
) -> None:
    """Integer-mm translations (every direction) in two of four segments, interleaved (discrete
    ghosts) or contiguous (blurring): the artefact off the moved object is displaced along PE only."""
    n = shape[0]
    lo, hi, margin = n // 2 - 6, n // 2 + 6, 3  # the object and the largest translation (voxels)
    image = box_image(shape, lo, hi)
    dims = len(shape)
    trans = torch.tensor([[0.0] * dims, [3.0, -3.0, 2.0][:dims], [0.0] * dims, [-2.0, 1.5, -4.0][:dims]])
    segments = torch.arange(n) % 4 if interleaved else None
    out = motion(
        image,
        pe_axis=pe_axis,
        plane_axes=plane_axes,
        translations_mm=trans,
        rotations_deg=[0.0] * 4,
        spacing_mm=[1.0, 1.5, 2.0][:dims],
        segment_of_line=segments,
    )
    # Translations in mm, whole voxels at spacing (1, 1.5, 2): at most 3, 2 and 2 voxels per
    # axis, so the band below (3 voxels) holds every moved copy.
    residual = (out - image)[0] ** 2
    pe = pe_axis % dims
    band = torch.ones(shape, dtype=torch.bool)  # within the moved object's extent on every non-PE axis
    outside_pe = torch.ones(shape, dtype=torch.bool)  # away from the object along PE
    for ax in range(dims):
        idx = torch.arange(shape[ax])
        near = (idx >= lo - margin) & (idx < hi + margin)
        view = [1] * dims
        view[ax] = shape[ax]
        if ax == pe:
            outside_pe = ~near.reshape(view).expand(shape)
        else:
            band = band & near.reshape(view).expand(shape)
    along_pe = float(residual[band & outside_pe].sum())
    elsewhere = float(residual[~band].sum())
    total = float((image**2).sum())
    assert along_pe > 0.02 * total  # a real artefact
    assert along_pe > 100 * elsewhere, (along_pe, elsewhere)
    assert elsewhere < 1e-12 * total  # integer shifts: exactly nothing off the band


def test_subvoxel_translation_ghosts_stay_mostly_along_pe() -> None:
    """A sub-voxel readout shift leaks a little (sinc) along the readout too, but PE dominates."""
    image = box_image((128, 128), 56, 72)
    out = motion(
        image,
        pe_axis=-1,
        plane_axes=(-2, -1),
        translations_mm=[[0.0, 0.0], [1.3, 0.7]],
        rotations_deg=[0.0, 0.0],
        spacing_mm=[1.0, 1.0],
        segment_of_line=torch.arange(128) % 2,
    )
    residual = (out - image)[0] ** 2
    along_pe = float(residual[50:78, :].sum() - residual[50:78, 50:78].sum())
    along_ro = float(residual[:, 50:78].sum() - residual[50:78, 50:78].sum())
    assert along_pe > 100 * along_ro


def test_interleaved_two_shots_make_the_half_fov_ghost() -> None:
    """Odd lines from a shifted object: out = |(I + I_t) / 2 +- roll((I - I_t) / 2, n / 2, PE)|."""
    n = 64
    image = box_image((n, n), 24, 40)
    shifted = torch.roll(image, 2, dims=-2)  # 2 mm along the readout axis X
    out = motion(
        image,
        pe_axis=-1,
        plane_axes=(-2, -1),
        translations_mm=[[0.0, 0.0], [2.0, 0.0]],
        rotations_deg=[0.0, 0.0],
        spacing_mm=[1.0, 1.0],
        segment_of_line=torch.arange(n) % 2,
    )
    expected = ((image + shifted) / 2).abs() + torch.roll(((image - shifted) / 2).abs(), n // 2, dims=-1)
    assert torch.allclose(out, expected, atol=1e-9)  # the ghost lands where the object is not


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_translation_of_every_segment_is_an_exact_shift(dtype: torch.dtype) -> None:
    image = torch.rand(2, 20, 24, 16, generator=gen(1), dtype=dtype) * 10
    spacing = [0.8, 1.2, 3.0]
    shift = (3, -5, 2)  # voxels
    trans = [[s * v for s, v in zip(spacing, shift, strict=True)]] * 5
    out = motion(
        image, pe_axis=-2, plane_axes=(-3, -2), translations_mm=trans, rotations_deg=[0.0] * 5, spacing_mm=spacing
    )
    assert out.dtype == dtype and out.shape == image.shape
    assert torch.allclose(out, torch.roll(image, shift, dims=(-3, -2, -1)), atol=1e-5 * 10)


def test_subvoxel_translation_matches_the_analytic_shift_and_inverts() -> None:
    """A positive band-limited periodic image shifts exactly (Fourier shift theorem), and back."""
    n, spacing, t = (27, 33), (1.1, 0.7), (0.37, -1.9)  # odd sizes: no Nyquist line
    x = torch.arange(n[0], dtype=torch.float64)[:, None]
    y = torch.arange(n[1], dtype=torch.float64)[None, :]

    def f(dx: float, dy: float) -> torch.Tensor:
        u, v = (x - dx) / n[0], (y - dy) / n[1]
        return (
            3
            + torch.cos(2 * math.pi * 2 * u)
            + 0.5 * torch.sin(2 * math.pi * (3 * v + u))
            + 0.3 * torch.cos(2 * math.pi * 5 * v)
        )

    image = f(0, 0)[None]
    kw = dict(pe_axis=-1, plane_axes=(-2, -1), rotations_deg=[0.0, 0.0], spacing_mm=spacing)
    out = motion(image, translations_mm=[t, t], **kw)
    assert torch.allclose(out[0], f(t[0] / spacing[0], t[1] / spacing[1]), atol=1e-10)
    back = motion(out, translations_mm=[[-t[0], -t[1]]] * 2, **kw)
    assert torch.allclose(back, image, atol=1e-10)


def smooth_blob(shape: tuple[int, int], spacing: tuple[float, float], centre_mm: tuple[float, float]) -> torch.Tensor:
    """An isotropic (in mm) Gaussian of 6 mm sigma at ``centre_mm`` from the FOV centre."""
    coords = [(torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    xx, yy = torch.meshgrid(*coords, indexing="ij")
    return 100 * torch.exp(-((xx - centre_mm[0]) ** 2 + (yy - centre_mm[1]) ** 2) / (2 * 6.0**2))


def test_rotation_by_90_is_rot90() -> None:
    shape, spacing = (64, 64), (1.0, 1.0)
    image = (smooth_blob(shape, spacing, (10.0, -4.0)) + smooth_blob(shape, spacing, (-8.0, 12.0)) / 2)[None, None]
    image = image.repeat(2, 3, 1, 1)  # (B, C, X, Y)
    for plane, k in (((-2, -1), 1), ((-1, -2), -1)):
        out = motion(
            image,
            pe_axis=-1,
            plane_axes=plane,
            translations_mm=[[0.0, 0.0]] * 3,
            rotations_deg=[90.0] * 3,
            spacing_mm=spacing,
        )
        assert torch.allclose(out, torch.rot90(image, k, dims=(-2, -1)), atol=1e-6 * 100)


def test_rotation_is_physical_on_anisotropic_grids() -> None:
    """Spacing (1, 2) mm: an off-centre blob rotated by 30 deg lands where geometry says."""
    shape, spacing = (96, 48), (1.0, 2.0)
    centre = (20.0, 0.0)
    image = smooth_blob(shape, spacing, centre)[None]
    out = motion(
        image, pe_axis=-2, plane_axes=(-2, -1), translations_mm=[[0.0, 0.0]], rotations_deg=[30.0], spacing_mm=spacing
    )
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    expected = smooth_blob(shape, spacing, (c * centre[0] - s * centre[1], s * centre[0] + c * centre[1]))[None]
    # Bilinear interpolation of a 6 mm Gaussian sampled every 2 mm: ~2 % of the peak.
    assert float((out - expected).abs().max()) < 2.5
    wrong = smooth_blob(shape, spacing, (c * centre[0], 2 * s * centre[0]))[None]  # where index-space rotation puts it
    assert float((out - wrong).abs().max()) > 20


def test_segments_mix_the_kspace_of_their_poses() -> None:
    """3D, three contiguous shots: identity, 90 deg + translation, translation. An independent
    reference (rot90, roll, centred FFT, line masks) gives the same image."""
    from mrisr.kspace.fft import to_image, to_kspace

    image = torch.rand(2, 24, 24, 8, generator=gen(2), dtype=torch.float64)
    spacing = [1.5, 1.5, 3.0]
    out = motion(
        image,
        pe_axis=-2,
        plane_axes=(-3, -2),
        translations_mm=[[0, 0, 0], [3.0, -1.5, 3.0], [0, 4.5, 0]],
        rotations_deg=[0.0, 90.0, 0.0],
        spacing_mm=spacing,
    )
    axes = (-3, -2, -1)
    poses = [
        image,
        torch.roll(torch.rot90(image, 1, dims=(-3, -2)), (2, -1, 1), dims=axes),
        torch.roll(image, 3, dims=-2),
    ]
    kspace = torch.zeros_like(to_kspace(image, axes))
    for i, lines in enumerate((slice(0, 8), slice(8, 16), slice(16, 24))):
        kspace[:, :, lines] = to_kspace(poses[i], axes)[:, :, lines]
    assert torch.allclose(out, to_image(kspace, axes).abs(), atol=1e-10)


def test_identity_and_determinism() -> None:
    image = torch.rand(2, 16, 12, 6, generator=gen(3))
    kw = dict(pe_axis=-2, plane_axes=(-3, -2), spacing_mm=[1.0, 1.0, 2.0])
    assert motion(image, translations_mm=torch.zeros(4, 3), rotations_deg=torch.zeros(4), **kw) is image
    trans, rots = random_motion_parameters(4, 3.0, 5.0, gen(11), 3)
    a = motion(image, translations_mm=trans, rotations_deg=rots, **kw)
    b = motion(image, translations_mm=trans, rotations_deg=rots, **kw)
    assert torch.equal(a, b)
    assert not torch.allclose(a, image, atol=1e-3)


def test_contiguous_segments() -> None:
    assert contiguous_segments(10, 3).tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert contiguous_segments(8, 8).tolist() == list(range(8))
    for n, s in ((256, 8), (256, 5), (64, 1)):
        seg = contiguous_segments(n, s)
        assert int(seg[n // 2]) == s // 2
        counts = torch.bincount(seg, minlength=s)
        assert int(counts.max() - counts.min()) <= 1


def test_random_motion_parameters() -> None:
    trans, rots = random_motion_parameters(8, 2.5, 4.0, gen(5), 3)
    assert trans.shape == (8, 3) and rots.shape == (8,)
    assert trans.dtype == rots.dtype == torch.float64 and trans.device.type == "cpu"
    assert float(trans.abs().max()) <= 2.5 and float(rots.abs().max()) <= 4.0
    assert torch.count_nonzero(trans[4]) == 0 and float(rots[4]) == 0.0  # S // 2: the k-space centre
    assert torch.count_nonzero(trans) == 21 and torch.count_nonzero(rots) == 7
    again = random_motion_parameters(8, 2.5, 4.0, gen(5), 3)
    assert torch.equal(trans, again[0]) and torch.equal(rots, again[1])
    other = random_motion_parameters(8, 2.5, 4.0, gen(6), 3)
    assert not torch.equal(trans, other[0])
    first = random_motion_parameters(8, 2.5, 4.0, gen(5), 3, reference_segment=0)
    assert torch.count_nonzero(first[0][0]) == 0 and torch.equal(first[0][1:4], trans[1:4])  # same stream
    trans2, _ = random_motion_parameters(3, 1.0, 0.0, gen(5), 2)
    assert trans2.shape == (3, 2)
    # Big sample: uniform over the whole range.
    big, _ = random_motion_parameters(10000, 1.0, 1.0, gen(1), 2)
    assert float(big.min()) < -0.99 and float(big.max()) > 0.99 and abs(float(big.mean())) < 0.02


def test_errors_name_the_parameter() -> None:
    image = torch.rand(1, 16, 16)
    kw = dict(
        pe_axis=-1,
        plane_axes=(-2, -1),
        translations_mm=[[1.0, 0.0]] * 2,
        rotations_deg=[0.0, 0.0],
        spacing_mm=[1.0, 1.0],
    )

    def call(**changes: object) -> torch.Tensor:
        return motion(image, **{**kw, **changes})

    with refused(InputError, "rotations_deg has shape \\(3,\\) but translations_mm has 2 segments"):
        call(rotations_deg=[0.0] * 3)
    with refused(InputError, "translations_mm has shape \\(2, 3\\).*\\(S, 2\\)"):
        call(translations_mm=[[1.0, 0.0, 0.0]] * 2)
    with refused(InputError, "plane_axes .* name the same axis twice"):
        call(plane_axes=(-1, 2))
    with refused(InputError, "plane_axes .*two distinct spatial axes"):
        call(plane_axes=(-1,))
    with refused(InputError, "plane_axes\\[0\\] 0 is not a spatial axis"):
        call(plane_axes=(0, 1))
    with refused(InputError, "pe_axis 0 is not a spatial axis"):
        call(pe_axis=0)
    with refused(InputError, "pe_axis 5 is not an axis"):
        call(pe_axis=5)
    with refused(InputError, "spacing_mm \\[1.0, 0.0\\] is not allowed"):
        call(spacing_mm=[1.0, 0.0])
    with refused(InputError, "spacing_mm .* is not allowed; give 2 or 3"):
        call(spacing_mm=[1.0])
    with refused(InputError, "translations_mm holds NaN"):
        call(translations_mm=[[math.nan, 0.0]] * 2)
    with refused(InputError, "segment_of_line has shape \\(15,\\); it must be \\(16,\\)"):
        call(segment_of_line=torch.zeros(15, dtype=torch.int64))
    with refused(InputError, "segment_of_line holds values in \\[0, 2\\]; they must be in \\[0, 1\\]"):
        call(segment_of_line=torch.arange(16) % 3)
    with refused(InputError, "segment_of_line must be an integer"):
        call(segment_of_line=torch.zeros(16))
    with refused(InputError, "image must be a float32 or float64"):
        motion(image.long(), **kw)
    with refused(InputError, "n_segments 0 is not allowed"):
        random_motion_parameters(0, 1.0, 1.0, gen(), 2)
    with refused(InputError, "max_translation_mm -1.0 is not allowed"):
        random_motion_parameters(4, -1.0, 1.0, gen(), 2)
    with refused(InputError, "max_rotation_deg inf is not allowed"):
        random_motion_parameters(4, 1.0, math.inf, gen(), 2)
    with refused(InputError, "spatial_dims 1 is not allowed"):
        random_motion_parameters(4, 1.0, 1.0, gen(), 1)
    with refused(InputError, "reference_segment 4 is not allowed; it must be in \\[0, 3\\]"):
        random_motion_parameters(4, 1.0, 1.0, gen(), 2, reference_segment=4)
    with refused(InputError, "generator must be a CPU torch.Generator"):
        random_motion_parameters(4, 1.0, 1.0, None, 2)  # type: ignore[arg-type]


@pytest.mark.gpu
def test_cuda_matches_cpu() -> None:
    image = torch.rand(2, 32, 28, 8, generator=gen(4))
    trans, rots = random_motion_parameters(6, 3.0, 5.0, gen(8), 3)
    kw = dict(pe_axis=-2, plane_axes=(-3, -2), translations_mm=trans, rotations_deg=rots, spacing_mm=[1.0, 1.2, 3.0])
    cpu = motion(image, **kw)
    cuda = motion(image.cuda(), **kw)
    assert cuda.device.type == "cuda" and cuda.dtype == image.dtype
    assert torch.allclose(cuda.cpu(), cpu, atol=1e-4)
