"""MONAI array transforms over the k-space forward model (:mod:`mrisr.kspace`).

Each works on a channel-first ``MetaTensor`` ``(C, X, Y, Z)`` whose ``affine`` is RAS
(mrisr's convention, and MONAI's for NIfTI) and returns a ``MetaTensor`` with the new
field-of-view-preserving affine where the grid changes. Deterministic transforms take
physical parameters; ``Rand...`` transforms draw them (MONAI's ``Randomizable``: seeded
with ``set_random_state``), then call the same function with a torch generator seeded
from that draw, so a MONAI seed reproduces the output bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Randomizable, Transform

from ..kspace.crop import kspace_crop
from ..kspace.degrade import degrade
from ..kspace.noise import rician_noise
from ..kspace.partial_fourier import partial_fourier
from ..kspace.slice_profile import slice_profile
from ..protocol import Acquisition, AcquisitionParams
from ..volume import Volume

__all__ = [
    "to_metatensor",
    "to_volume",
    "SliceProfile",
    "KSpaceCrop",
    "PartialFourier",
    "RicianNoise",
    "Degrade",
    "RandSliceProfile",
    "RandRicianNoise",
    "RandDegrade",
]


def to_metatensor(volume: Volume) -> MetaTensor:
    """A ``Volume`` as a channel-first ``MetaTensor`` (RAS affine; meta kept under ``mrisr``)."""
    array = volume.array if isinstance(volume.array, torch.Tensor) else torch.from_numpy(np.asarray(volume.array))
    affine = torch.from_numpy(np.array(volume.affine, dtype=np.float64))  # a copy: Volume.affine is read-only
    return MetaTensor(array, affine=affine, meta={"mrisr": volume.meta})


def to_volume(image: torch.Tensor) -> Volume:
    """A ``MetaTensor`` (or plain tensor with identity geometry) as a ``Volume`` (torch array)."""
    affine = image.affine.detach().cpu().numpy() if isinstance(image, MetaTensor) else np.eye(4)
    meta = dict(image.meta.get("mrisr", {})) if isinstance(image, MetaTensor) else {}
    array = image.as_tensor() if isinstance(image, MetaTensor) else image
    return Volume(array, affine, meta)


def _wrap(like: torch.Tensor, array: torch.Tensor, affine: np.ndarray | None) -> MetaTensor:
    """``array`` as a MetaTensor carrying ``like``'s meta and ``affine`` (or ``like``'s)."""
    out = MetaTensor(array, meta=dict(like.meta) if isinstance(like, MetaTensor) else {})
    if affine is not None:
        out.affine = torch.from_numpy(np.array(affine, dtype=np.float64))
    elif isinstance(like, MetaTensor):
        out.affine = like.affine.clone()
    return out


def _degraded(like: torch.Tensor, low: Volume) -> MetaTensor:
    """The degraded volume as a MetaTensor, with what was drawn under ``mrisr_degradation``."""
    out = _wrap(like, low.array, low.affine)
    out.meta["mrisr_degradation"] = low.meta["degradation"]
    return out


def _affine(image: torch.Tensor) -> np.ndarray:
    return image.affine.detach().cpu().numpy() if isinstance(image, MetaTensor) else np.eye(4)


def _generator(randomizable: Randomizable) -> torch.Generator:
    """A CPU torch generator seeded from MONAI's random state (reproducible with set_random_state)."""
    return torch.Generator().manual_seed(int(randomizable.R.randint(0, 2**31 - 1)))


class SliceProfile(Transform):
    """:func:`~mrisr.kspace.slice_profile.slice_profile` along a voxel axis (0, 1, 2 = X, Y, Z)."""

    def __init__(self, axis: int, thickness_mm: float, slice_spacing_mm: float, profile: str = "gaussian") -> None:
        self.axis, self.profile = axis, profile
        self.thickness_mm, self.slice_spacing_mm = thickness_mm, slice_spacing_mm

    def __call__(self, img: torch.Tensor) -> MetaTensor:
        array, affine = slice_profile(
            torch.as_tensor(img), self.axis - 3, thickness_mm=self.thickness_mm,
            slice_spacing_mm=self.slice_spacing_mm, profile=self.profile, affine=_affine(img),
        )
        return _wrap(img, array, affine)


class KSpaceCrop(Transform):
    """:func:`~mrisr.kspace.crop.kspace_crop` over voxel axes to an acquired spacing (mm)."""

    def __init__(self, axes: Sequence[int], spacing_mm: Sequence[float], window: str | None = None,
                 output: str = "acquired") -> None:
        self.axes, self.spacing_mm, self.window, self.output = list(axes), list(spacing_mm), window, output

    def __call__(self, img: torch.Tensor) -> MetaTensor:
        array, affine = kspace_crop(
            torch.as_tensor(img), [a - 3 for a in self.axes], spacing_mm=self.spacing_mm, affine=_affine(img),
            window=self.window, output=self.output,
        )
        return _wrap(img, array, affine)


class PartialFourier(Transform):
    """:func:`~mrisr.kspace.partial_fourier.partial_fourier` along a voxel axis."""

    def __init__(self, axis: int, fraction: float, homodyne: bool = False) -> None:
        self.axis, self.fraction, self.homodyne = axis, fraction, homodyne

    def __call__(self, img: torch.Tensor) -> MetaTensor:
        return _wrap(img, partial_fourier(torch.as_tensor(img), self.axis - 3, self.fraction,
                                          homodyne=self.homodyne), None)


class RicianNoise(Randomizable, Transform):
    """Rician noise at a fixed SNR (random by nature: seeded through ``set_random_state``)."""

    def __init__(self, snr: float) -> None:
        self.snr = snr

    def randomize(self, data: object = None) -> None:
        self._torch_generator = _generator(self)

    def __call__(self, img: torch.Tensor) -> MetaTensor:
        self.randomize()
        noisy = rician_noise(torch.as_tensor(img), snr=self.snr, generator=self._torch_generator, spatial_dims=3)
        return _wrap(img, noisy, None)


class Degrade(Randomizable, Transform):
    """:func:`~mrisr.kspace.degrade.degrade` with fixed parameters (noise and motion draws seeded)."""

    def __init__(self, params: AcquisitionParams) -> None:
        self.params: AcquisitionParams | None = params

    def randomize(self, data: object = None) -> None:
        self._torch_generator = _generator(self)

    def __call__(self, img: torch.Tensor) -> MetaTensor:
        self.randomize()
        return _degraded(img, degrade(to_volume(img), self.params, self._torch_generator))


class RandSliceProfile(Randomizable, Transform):
    """A slice profile with thickness and gap drawn uniformly (mm) and a profile from a list."""

    def __init__(self, axis: int, thickness_mm: tuple[float, float], gap_mm: tuple[float, float] = (0.0, 0.0),
                 profiles: Sequence[str] = ("gaussian",), prob: float = 1.0) -> None:
        self.axis, self.thickness_mm, self.gap_mm = axis, thickness_mm, gap_mm
        self.profiles, self.prob = list(profiles), prob

    def randomize(self, data: object = None) -> None:
        self._do = self.R.rand() < self.prob
        self._thickness = float(self.R.uniform(*self.thickness_mm))
        self._gap = float(self.R.uniform(*self.gap_mm))
        self._profile = self.profiles[int(self.R.randint(len(self.profiles)))]

    def __call__(self, img: torch.Tensor) -> MetaTensor:
        self.randomize()
        if not self._do:
            return _wrap(img, torch.as_tensor(img), None)
        return SliceProfile(self.axis, self._thickness, self._thickness + self._gap, self._profile)(img)


class RandRicianNoise(Randomizable, Transform):
    """Rician noise with 1/SNR drawn uniformly between ``1/snr[1]`` and ``1/snr[0]`` (``inf`` allowed)."""

    def __init__(self, snr: tuple[float, float], prob: float = 1.0) -> None:
        self.snr, self.prob = snr, prob

    def randomize(self, data: object = None) -> None:
        self._do = self.R.rand() < self.prob
        inv = self.R.uniform(1.0 / self.snr[1], 1.0 / self.snr[0])
        self._snr = float("inf") if inv == 0 else 1.0 / inv
        self._torch_generator = _generator(self)

    def __call__(self, img: torch.Tensor) -> MetaTensor:
        self.randomize()
        if not self._do or self._snr == float("inf"):
            return _wrap(img, torch.as_tensor(img), None)
        noisy = rician_noise(torch.as_tensor(img), snr=self._snr, generator=self._torch_generator, spatial_dims=3)
        return _wrap(img, noisy, None)


class RandDegrade(Randomizable, Transform):
    """A whole protocol acquisition with parameters drawn from its ranges (``Acquisition.sample``)."""

    def __init__(self, acquisition: Acquisition) -> None:
        self.acquisition = acquisition
        self.params: AcquisitionParams | None = None

    def randomize(self, data: object = None) -> None:
        self._torch_generator = _generator(self)
        self.params = self.acquisition.sample(self._torch_generator)

    def __call__(self, img: torch.Tensor) -> MetaTensor:
        self.randomize()
        assert self.params is not None
        return _degraded(img, degrade(to_volume(img), self.params, self._torch_generator))
