"""The forward model ``Ix = D(Iy) + n``: pure torch functions, no MONAI.

Conventions shared by every function here:

- ``image`` is a real torch tensor (a magnitude image), float32 or float64, of shape
  ``(*batch, *spatial)``; functions work on CPU and CUDA and keep device and dtype.
- ``axis`` / ``axes`` index the tensor's dimensions and may be negative: for a
  ``(C, X, Y, Z)`` volume ``X`` is ``-3``, ``Y`` is ``-2`` and ``Z`` is ``-1``; for a
  batch of 2D planes ``(B, C, X, Y)``, ``X`` is ``-2`` and ``Y`` is ``-1``.
- Lengths are in mm. Functions that change the grid take ``affine`` (4x4, voxel
  centres, RAS mm) describing the LAST THREE dimensions and return the new,
  field-of-view-preserving affine (:func:`mrisr.volume.fov_affine`); with
  ``affine=None`` they return ``None`` for it and take spacings explicitly.
- k-space is centred (DC at index ``n // 2``) with orthonormal FFTs (:mod:`.fft`).
- Randomness comes only from an explicit ``torch.Generator`` on the CPU: values are
  drawn there and moved to the image's device, so CPU and CUDA runs match.
- Identity parameters return the input unchanged.
"""

from .crop import crop_kspace, kspace_crop
from .degrade import AcquisitionAxes, acquisition_axes, degrade
from .fft import to_image, to_kspace
from .masks import cartesian_mask, undersample
from .motion import motion, random_motion_parameters
from .noise import rician_noise, signal_level
from .partial_fourier import partial_fourier, partial_fourier_mask
from .slice_profile import profile_weights, slice_profile

__all__ = [
    "to_kspace",
    "to_image",
    "slice_profile",
    "profile_weights",
    "kspace_crop",
    "crop_kspace",
    "partial_fourier",
    "partial_fourier_mask",
    "rician_noise",
    "signal_level",
    "motion",
    "random_motion_parameters",
    "cartesian_mask",
    "undersample",
    "degrade",
    "acquisition_axes",
    "AcquisitionAxes",
]
