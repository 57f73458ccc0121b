"""NIfTI-1/NIfTI-2 reading and writing (``.nii``, ``.nii.gz``) through nibabel.

NIfTI is RAS already, so the affine goes through unchanged. Axis rules:
3D ``(X, Y, Z)`` -> ``(1, X, Y, Z)``; 4D ``(X, Y, Z, T)`` -> ``(T, X, Y, Z)``;
2D ``(X, Y)`` -> ``(1, X, Y, 1)``; 5D+ only when the axes beyond the 4th are 1.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

from ..errors import GeometryError, InputError, OutputError
from ..volume import Volume, world_corners
from .formats import endings_of
from .intensity import cast_for_storage, check_finite, intensity_meta, storage_dtype, to_numpy

__all__ = ["read_nifti", "write_nifti"]

#: sform and qform closer than this (mm, at the FOV corners) are the same geometry.
XFORM_AGREE_MM = 1e-3
#: nibabel's code for "scanner anatomical" coordinates, as dcm2niix writes.
SCANNER_CODE = 1
_SUFFIXES = endings_of("nifti")
_FIX_CORRUPT = "re-export or re-download the file; check it with `nib-ls` or `fslhd`"


def _corrupt(path: Path, reason: str) -> InputError:
    return InputError(f"truncated or corrupt NIfTI: {reason}", path, fix=_FIX_CORRUPT)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text[:200]}"


def _load(path: Path) -> tuple[nib.Nifti1Pair, np.ndarray]:
    """The nibabel image and its scaled data as float32, nibabel's axis order."""
    if not path.is_file():
        raise InputError("file not found", path, fix="check the path")
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for bad files
        raise _corrupt(path, _reason(exc)) from exc
    if not isinstance(img, nib.Nifti1Pair):  # Nifti1Image/Nifti2Image subclass Nifti1Pair
        raise InputError(
            f"not a NIfTI file (nibabel reads it as {type(img).__name__})",
            path,
            fix="convert it to NIfTI first, e.g. with nibabel or dcm2niix",
        )
    on_disk = img.get_data_dtype()
    if on_disk.kind not in "biuf":
        raise InputError(
            f"unsupported NIfTI data type {on_disk} (complex or RGB)",
            path,
            fix="convert it to a real-valued scalar image, one channel per volume",
        )
    try:
        data = np.asarray(img.get_fdata(dtype=np.float32), dtype=np.float32)
    except Exception as exc:  # truncated gzip stream, short file, ...
        raise _corrupt(path, _reason(exc)) from exc
    return img, data


def _channels_first(data: np.ndarray, path: Path) -> np.ndarray:
    """nibabel's ``(X, Y[, Z[, T[, ...]]])`` array as ``(C, X, Y, Z)``."""
    if data.ndim > 4:
        if any(n != 1 for n in data.shape[4:]):
            raise InputError(
                f"{data.ndim}D NIfTI not supported (shape {list(data.shape)})",
                path,
                fix="split it into 3D/4D files, e.g. with fslsplit",
            )
        data = data.reshape(data.shape[:4])
    if data.ndim == 4:
        return np.moveaxis(data, 3, 0)
    if data.ndim == 3:
        return data[None]
    if data.ndim == 2:
        return data[None, :, :, None]
    raise InputError(
        f"{data.ndim}D NIfTI is not an image (shape {list(data.shape)})",
        path,
        fix="give a 2D, 3D or 4D image",
    )


def _affine(header: nib.Nifti1Header, shape: tuple[int, int, int], path: Path) -> np.ndarray:
    """The voxel -> RAS mm affine: sform if coded, else qform, else pixdim (NIfTI method 1)."""
    sform, s_code = header.get_sform(coded=True)
    qform, q_code = header.get_qform(coded=True)
    if s_code and q_code:
        diff = np.linalg.norm(world_corners(sform, shape) - world_corners(qform, shape), axis=1)
        if diff.max() > XFORM_AGREE_MM:
            warnings.warn(
                f"{path}: sform (code {int(s_code)}) and qform (code {int(q_code)}) disagree "
                f"by up to {diff.max():.4g} mm at the field-of-view corners; using the sform",
                stacklevel=3,
            )
    if s_code:
        return np.asarray(sform, dtype=np.float64)
    if q_code:
        return np.asarray(qform, dtype=np.float64)
    zooms = np.ones(3)
    pixdim = header.get_zooms()[:3]
    zooms[: len(pixdim)] = pixdim
    warnings.warn(
        f"{path}: sform_code and qform_code are both 0 (no world geometry); using the "
        f"voxel sizes {zooms.tolist()} mm with origin 0 (NIfTI method 1)",
        stacklevel=3,
    )
    return np.diag([*zooms, 1.0])


def read_nifti(path: str | Path) -> Volume:
    """Read a NIfTI-1 or NIfTI-2 file (``.nii`` or ``.nii.gz``).

    Returns:
        A Volume: float32 ``(C, X, Y, Z)`` after ``scl_slope``/``scl_inter``,
        affine voxel -> RAS mm, and meta ``source_format``, ``source_paths``,
        ``dtype`` (on-disk), ``range`` (scaled values), ``nifti_sform_code``,
        ``nifti_qform_code``.

    Raises:
        InputError: missing, truncated or corrupt file, unsupported dimensions or
            data type, NaN or infinite voxels.
        GeometryError: a singular affine (zero voxel size).

    Warns (``UserWarning``) when sform and qform disagree by more than 1e-3 mm
    at the field-of-view corners, and when neither is set.
    """
    path = Path(path)
    img, data = _load(path)
    array = _channels_first(data, path)
    check_finite(array, path)
    header = img.header
    affine = _affine(header, array.shape[1:], path)
    meta = {
        "source_format": "nifti",
        "source_paths": [str(path)],
        **intensity_meta(array, img.get_data_dtype()),
        "nifti_sform_code": int(header["sform_code"]),
        "nifti_qform_code": int(header["qform_code"]),
    }
    try:
        return Volume(np.ascontiguousarray(array), affine, meta)
    except GeometryError as exc:
        raise GeometryError(exc.problem, path, fix="fix the header's pixdim/sform/qform") from exc


def _qform_represents(header: nib.Nifti1Header, affine: np.ndarray, shape: tuple[int, ...]) -> bool:
    """Whether the qform nibabel set in ``header`` reproduces ``affine``.

    A qform is a rotation times positive zooms (and a flip): it cannot hold a
    sheared affine, whose columns are not orthogonal. nibabel then stores the
    nearest rigid+zoom affine, which :func:`read_nifti` would report as disagreeing
    with the sform. The test is on the field-of-view corners, the reader's test,
    with half its tolerance left for float32 storage.
    """
    qform = header.get_qform()
    diff = np.linalg.norm(world_corners(qform, shape) - world_corners(affine, shape), axis=1)
    return bool(diff.max() <= XFORM_AGREE_MM / 2)


def write_nifti(volume: Volume, path: str | Path) -> None:
    """Write ``volume`` as NIfTI-1 (NIfTI-2 when a dimension exceeds 32767).

    One channel gives a 3D file, ``C`` channels a 4D file ``(X, Y, Z, C)``. The
    dtype is :func:`~mrisr.io.intensity.storage_dtype`'s (integers round-trip
    exactly); sform and qform are both set to the affine with code 1 (scanner),
    units mm, except that a sheared affine (columns not orthogonal), which no
    qform can hold, gets qform code 0 so that readers use the exact sform. The file is written in place: use
    :func:`~mrisr.io.atomic.atomic_output` around it for safe replacement.
    """
    path = Path(path)
    if not path.name.endswith(_SUFFIXES):
        raise OutputError(
            f"a NIfTI output must end in .nii or .nii.gz, got {path.name!r}",
            path,
            fix="rename the output",
        )
    array = to_numpy(volume.array)
    dtype = storage_dtype(array, volume.meta)
    data = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, 3)
    data = cast_for_storage(data, dtype)
    affine = np.array(volume.affine, dtype=np.float64)
    image_class = nib.Nifti2Image if max(data.shape) > 32767 else nib.Nifti1Image
    img = image_class(data, affine)
    img.set_sform(affine, code=SCANNER_CODE)
    img.set_qform(affine, code=SCANNER_CODE)
    header = img.header
    if not _qform_represents(header, affine, array.shape[1:]):
        header["qform_code"] = 0  # quaternions and pixdim stay as the nearest rigid+zoom guess
    header.set_data_dtype(dtype)
    header.set_xyzt_units(xyz="mm")
    header["descrip"] = b"mrisr"
    try:
        nib.save(img, path)
    except OSError as exc:
        raise OutputError(
            f"cannot write NIfTI: {exc.strerror or exc}",
            path,
            fix="check the folder exists, is writable and has space",
        ) from exc
