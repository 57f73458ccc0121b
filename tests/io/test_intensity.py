"""storage_dtype, check_finite, intensity_meta."""

from __future__ import annotations

import numpy as np
import pytest

from mrisr.errors import InputError
from mrisr.io.intensity import check_finite, intensity_meta, storage_dtype


@pytest.mark.parametrize(
    ("values", "meta", "expected"),
    [
        ([0, 1, -32768, 32767], {"dtype": "int16"}, "int16"),
        ([0, 255], {"dtype": "uint8"}, "uint8"),
        ([0, 256], {"dtype": "uint8"}, "float32"),  # out of range: never wraps
        ([-1, 3], {"dtype": "uint8"}, "float32"),
        ([0, 32768], {"dtype": "int16"}, "float32"),
        ([0.5, 2], {"dtype": "int16"}, "float32"),  # not integers any more
        ([np.nan, 2], {"dtype": "int16"}, "float32"),
        ([np.inf, 2], {"dtype": "int32"}, "float32"),
        ([0, 100], {"dtype": "float32"}, "float32"),
        ([0, 100], {"dtype": "float64"}, "float32"),
        ([0, 100], {}, "float32"),  # integers are never guessed
        ([0, 100], {"dtype": "not-a-dtype"}, "float32"),
        ([0, 100], {"dtype": None}, "float32"),
        ([0, 1], {"dtype": "bool"}, "float32"),
        ([0, 70000], {"dtype": "int32"}, "int32"),
        ([0, 65535], {"dtype": "uint16"}, "uint16"),
    ],
)
def test_storage_dtype(values: list[float], meta: dict, expected: str) -> None:
    array = np.array(values, dtype=np.float32).reshape(1, -1, 1, 1)
    assert storage_dtype(array, meta) == np.dtype(expected)


def test_storage_dtype_accepts_integer_arrays_and_empty_arrays() -> None:
    assert storage_dtype(np.array([1, 300], dtype=np.int64), {"dtype": "uint8"}) == np.float32
    assert storage_dtype(np.array([1, 3], dtype=np.int64), {"dtype": "uint8"}) == np.uint8
    assert storage_dtype(np.zeros((1, 0, 1, 1)), {"dtype": "int16"}) == np.int16


def test_check_finite_passes_finite_and_integer_arrays() -> None:
    check_finite(np.ones((1, 2, 2, 2), dtype=np.float32), "a.nii")
    check_finite(np.ones((1, 2, 2, 2), dtype=np.int16), "a.nii")


def test_check_finite_names_file_count_and_fix() -> None:
    array = np.ones((1, 4, 4, 4), dtype=np.float32)
    array[0, 0, 0, :3] = np.nan
    array[0, 1, 1, 1] = -np.inf
    with pytest.raises(InputError) as info:
        check_finite(array, "/data/scan.nii.gz")
    message = str(info.value)
    assert "/data/scan.nii.gz" in message
    assert "4 of 64" in message and "3 NaN" in message and "1 infinite" in message
    assert "nan_to_num" in message


def test_intensity_meta() -> None:
    meta = intensity_meta(np.array([[-3.0, 7.5]], dtype=np.float32), np.int16)
    assert meta == {"dtype": "int16", "range": [-3.0, 7.5]}
    assert isinstance(meta["range"][0], float)
    assert intensity_meta(np.zeros(0), "uint8") == {"dtype": "uint8", "range": None}
