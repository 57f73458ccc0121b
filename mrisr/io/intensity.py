"""Intensity bookkeeping shared by the readers and writers: on-disk dtype and range.

Inside mrisr every array is float32; ``meta["dtype"]`` remembers the source's
on-disk dtype so that a writer can store integer data back as integers, exactly,
whenever the values still fit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["to_numpy", "storage_dtype", "cast_for_storage", "check_finite", "intensity_meta"]


def to_numpy(array: Any) -> np.ndarray:
    """``array`` as a numpy array (a torch tensor is detached and moved to the CPU)."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def storage_dtype(array: Any, meta: Mapping[str, Any]) -> np.dtype:
    """The dtype to write ``array`` with.

    ``meta["dtype"]`` (the source's on-disk dtype name, e.g. ``"int16"``) when it is
    an integer dtype and every value of ``array`` is a finite integer within that
    dtype's range, so that integer data round-trips exactly; otherwise float32.
    An integer dtype is never guessed from the values alone.
    """
    name = meta.get("dtype")
    try:
        dtype = np.dtype(name) if name is not None else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "iu":
        return np.dtype(np.float32)
    values = to_numpy(array)
    if values.size == 0:
        return dtype
    if values.dtype.kind in "iu":
        lo, hi = values.min(), values.max()
    else:
        if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
            return np.dtype(np.float32)
        lo, hi = values.min(), values.max()
    info = np.iinfo(dtype)
    if lo < info.min or hi > info.max:
        return np.dtype(np.float32)
    return dtype


def cast_for_storage(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` in ``dtype`` (from :func:`storage_dtype`): rounded to the nearest
    integer for integer dtypes (float32 holds them exactly), else a plain cast."""
    return np.rint(values).astype(dtype) if dtype.kind in "iu" else values.astype(dtype)


def check_finite(array: Any, path: str | os.PathLike[str]) -> None:
    """Raise ``InputError`` naming ``path`` if ``array`` holds NaN or infinite voxels."""
    values = to_numpy(array)
    if values.dtype.kind not in "fc":
        return
    finite = np.isfinite(values)
    bad = int(values.size - np.count_nonzero(finite))
    if bad == 0:
        return
    n_nan = int(np.count_nonzero(np.isnan(values)))
    raise InputError(
        f"{bad} of {values.size} voxels are not finite ({n_nan} NaN, {bad - n_nan} infinite)",
        path,
        fix="replace NaN and infinite voxels, e.g. with numpy.nan_to_num, then retry",
    )


def intensity_meta(array: Any, dtype: Any) -> dict[str, Any]:
    """``{"dtype": name, "range": [min, max]}`` of the original values (range ``None`` if empty)."""
    values = to_numpy(array)
    value_range = None if values.size == 0 else [float(values.min()), float(values.max())]
    return {"dtype": np.dtype(dtype).name, "range": value_range}
