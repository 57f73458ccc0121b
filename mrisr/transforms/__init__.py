"""MONAI transforms over :mod:`mrisr.kspace` (array and dictionary versions).

MetaTensor lives here (and in train/, infer/): :func:`to_metatensor` and
:func:`to_volume` convert at the edge.
"""

from .array import (
    Degrade,
    KSpaceCrop,
    PartialFourier,
    RandDegrade,
    RandRicianNoise,
    RandSliceProfile,
    RicianNoise,
    SliceProfile,
    to_metatensor,
    to_volume,
)
from .dictionary import Degraded, KSpaceCropd, PartialFourierd, RandDegraded, RicianNoised, SliceProfiled

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
    "SliceProfiled",
    "KSpaceCropd",
    "PartialFourierd",
    "RicianNoised",
    "Degraded",
    "RandDegraded",
]
