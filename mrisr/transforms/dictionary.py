"""Dictionary versions of :mod:`.array` for ``{"hr", "lr"}`` pipelines.

``SliceProfiled`` and friends apply an array transform to ``keys`` in place, as MONAI's
``...d`` transforms do. ``Degraded`` / ``RandDegraded`` read the high-resolution image at
``hr_key`` and write its simulated acquisition to ``lr_key`` (keeping ``hr_key``), with
the drawn parameters in the output's meta under ``mrisr_degradation``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from ..protocol import Acquisition, AcquisitionParams
from .array import Degrade, KSpaceCrop, PartialFourier, RandDegrade, RicianNoise, SliceProfile

__all__ = ["SliceProfiled", "KSpaceCropd", "PartialFourierd", "RicianNoised", "Degraded", "RandDegraded"]


class _Apply(MapTransform):
    """Apply one array transform to every key."""

    transform: Any

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class SliceProfiled(_Apply):
    def __init__(self, keys: KeysCollection, axis: int, thickness_mm: float, slice_spacing_mm: float,
                 profile: str = "gaussian", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = SliceProfile(axis, thickness_mm, slice_spacing_mm, profile)


class KSpaceCropd(_Apply):
    def __init__(self, keys: KeysCollection, axes: Sequence[int], spacing_mm: Sequence[float],
                 window: str | None = None, output: str = "zerofilled", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = KSpaceCrop(axes, spacing_mm, window, output)


class PartialFourierd(_Apply):
    def __init__(self, keys: KeysCollection, axis: int, fraction: float, homodyne: bool = False,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.transform = PartialFourier(axis, fraction, homodyne)


class _Delegating(Randomizable):
    """Randomness lives in ``self.transform`` (an array transform): seed it with ours."""

    transform: Any

    def set_random_state(self, seed: int | None = None, state: Any = None) -> _Delegating:
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:  # the array transform draws
        pass


class RicianNoised(_Delegating, _Apply):
    def __init__(self, keys: KeysCollection, snr: float, allow_missing_keys: bool = False) -> None:
        _Apply.__init__(self, keys, allow_missing_keys)
        self.transform = RicianNoise(snr)


class _HrToLr(_Delegating, MapTransform):
    """Read ``hr_key``, write the degraded copy to ``lr_key``."""

    transform: Degrade | RandDegrade

    def __init__(self, hr_key: str = "hr", lr_key: str = "lr") -> None:
        MapTransform.__init__(self, [hr_key])
        self.hr_key, self.lr_key = hr_key, lr_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        d[self.lr_key] = self.transform(d[self.hr_key])  # its meta holds mrisr_degradation
        return d


class Degraded(_HrToLr):
    """``d[lr_key] = degrade(d[hr_key], params)``."""

    def __init__(self, params: AcquisitionParams, hr_key: str = "hr", lr_key: str = "lr") -> None:
        super().__init__(hr_key, lr_key)
        self.transform = Degrade(params)


class RandDegraded(_HrToLr):
    """``d[lr_key]`` = a protocol acquisition of ``d[hr_key]`` with parameters drawn from its ranges."""

    def __init__(self, acquisition: Acquisition, hr_key: str = "hr", lr_key: str = "lr") -> None:
        super().__init__(hr_key, lr_key)
        self.transform = RandDegrade(acquisition)
