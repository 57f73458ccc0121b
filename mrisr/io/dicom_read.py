"""Read a DICOM series into a :class:`~mrisr.volume.Volume`.

Files -> slice records (:mod:`.dicom_slices`) -> candidates and volumes with one
exact affine (:mod:`.dicom_series`) -> pixels, rescaled -> ``Volume``.
Compressed transfer syntaxes are decoded by pydicom's pixel handlers
(pylibjpeg, openjpeg, RLE plugins are dependencies of mrisr).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from ..errors import InputError, MrisrError
from ..volume import Volume
from .dicom_series import SeriesInfo, describe, fit_slice_grid, group_candidates, pick, stack_volumes
from .dicom_slices import (
    DICOMDIR_SOP_CLASS,
    UNKNOWN_SERIES,
    SliceRecord,
    UnusableImage,
    is_image_header,
    looks_like_dicom,
    read_header,
    records_from_dataset,
)
from .formats import endings_of
from .intensity import check_finite

__all__ = ["read_dicom", "list_dicom_series", "scan_records"]

#: Keywords dropped from the header kept as a template for writers.
_TEMPLATE_DROP = (
    "PixelData",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "PerFrameFunctionalGroupsSequence",
    "SharedFunctionalGroupsSequence",
)


def scan_records(
    files: Sequence[Path], where: Path, strict: bool
) -> tuple[list[SliceRecord], dict[Path, Dataset]]:
    """Parse the headers of ``files`` into slice records.

    Args:
        files: candidate DICOM files.
        where: what the user named (for messages).
        strict: raise on an unreadable file (files named one by one); otherwise
            skip files that are not DICOM (a README in a folder, say).

    Returns:
        ``(records, datasets)``; datasets keep pixel data deferred until read.
    """
    records: list[SliceRecord] = []
    datasets: dict[Path, Dataset] = {}
    skipped: list[Path] = []
    no_pixels: list[Path] = []
    unusable: list[UnusableImage] = []
    headers_only: list[tuple[Path, str]] = []
    for path in files:
        try:
            ds = read_header(path)
        except InputError:
            if strict or looks_like_dicom(path) or _dicom_name(path):  # a broken DICOM file is an error, not junk
                raise
            skipped.append(path)
            continue
        if str(ds.file_meta.get("MediaStorageSOPClassUID", "")) == DICOMDIR_SOP_CLASS:
            continue
        try:
            recs = records_from_dataset(ds, path)
        except UnusableImage as exc:
            if len(files) == 1:
                raise
            unusable.append(exc)
            continue
        except MrisrError:
            raise
        except (ValueError, TypeError, AttributeError) as exc:  # a malformed value (Rows '1A', say)
            raise InputError(
                f"malformed DICOM value ({str(exc).splitlines()[0][:120]})",
                path,
                "the file's header is broken; re-export the series from the scanner or PACS",
            ) from None
        if not recs:
            if is_image_header(ds):
                headers_only.append((path, str(ds.get("SeriesInstanceUID", "")) or UNKNOWN_SERIES))
            else:
                no_pixels.append(path)
            continue
        datasets[path] = ds
        records.extend(recs)
    # An image header without pixels beside complete images of its series, or named alone,
    # is a cut file: never a silently thinner volume. A whole series of them is skipped.
    series_with_pixels = {r.series_uid for r in records}
    for path, uid in headers_only:
        if uid in series_with_pixels or strict:
            raise InputError(
                "truncated: image header without pixel data", path, "the file is incomplete; copy or export it again"
            )
    if skipped and records:
        warnings.warn(
            f"{where}: skipped {len(skipped)} file(s) that are not DICOM, e.g. {skipped[0].name}",
            stacklevel=3,
        )
    if unusable and records:
        warnings.warn(
            f"{where}: skipped {len(unusable)} image(s) mrisr cannot place in 3D, e.g. {unusable[0].one_line()}",
            stacklevel=3,
        )
    if not records:
        if unusable:
            raise unusable[0]
        if headers_only:
            raise InputError(
                f"image headers without pixel data ({len(headers_only)} file(s), e.g. {headers_only[0][0].name})",
                where,
                "the export is incomplete (header-only); export the series with its pixel data",
            )
        if no_pixels:
            raise InputError(
                f"DICOM without pixel data ({len(no_pixels)} file(s), e.g. {no_pixels[0].name}:"
                " a report, structure set or presentation state)",
                where,
                "point mrisr at the image series itself",
            )
        if skipped:
            raise InputError(
                f"no readable DICOM file ({len(skipped)} file(s) that are not DICOM, e.g. {skipped[0].name})",
                where,
                "point mrisr at a folder of DICOM images",
            )
        raise InputError("holds no DICOM files", where, "point mrisr at a folder of DICOM images")
    return records, datasets


#: File endings that say "this is DICOM": such a file that cannot be read is an error, even in a folder.
_DICOM_SUFFIXES = endings_of("dicom")


def _dicom_name(path: Path) -> bool:
    return path.name.lower().endswith(_DICOM_SUFFIXES)


def list_dicom_series(files: Sequence[Path], where: Path, strict: bool = False) -> list[SeriesInfo]:
    """The image series (candidates) found in ``files``."""
    records, _ = scan_records(files, where, strict)
    return [describe(c) for c in group_candidates(records)]


def read_dicom(
    files: Sequence[Path], where: Path, series: str | None = None, strict: bool = False
) -> Volume:
    """Read one DICOM series from ``files``.

    Args:
        files: the DICOM files (a folder's content, a list, an extracted archive).
        where: what the user named, for messages.
        series: the series id (see ``list_series``) when there are several.
        strict: every file must be DICOM (True when files were named one by one).

    Returns:
        ``Volume`` with array ``(C, X, Y, Z)``: X along a row (DICOM columns), Y down
        the columns (DICOM rows), Z along the slice normal; one channel per volume
        of a 4D series (echo, time point, diffusion direction). With more than one slice,
        ``meta["slice_grid"]`` holds the slice grid fitted to the positions: ``spacing_mm``,
        ``max_residual_mm`` (a slice's largest distance from its place, along the normal),
        ``n_slices`` and ``fit`` ("end slices" or "least squares").
    """
    records, datasets = scan_records(files, where, strict)
    candidates = group_candidates(records)
    candidate = pick(candidates, series, where)
    volumes, keys, affine = stack_volumes(candidate.records, where)
    first = volumes[0][0]
    # Filled slice by slice in (C, Z, rows, cols) order, contiguous writes; returned as the
    # (C, X, Y, Z) view of it, the same memory layout as NIfTI's (Fortran order per channel).
    stack = np.empty((len(volumes), len(volumes[0]), first.rows, first.cols), dtype=np.float32)
    float_pixels = any(not _has_integer_pixel_data(datasets[r.path]) for v in volumes for r in v)
    lo, hi = _fill(stack, volumes, datasets, where)
    array = stack.transpose(0, 3, 2, 1)
    if float_pixels:
        check_finite(array, where)
    source_paths = sorted({str(r.path) for v in volumes for r in v})
    header = datasets[first.path]
    meta: dict[str, Any] = {
        "source_format": "dicom",
        "source_paths": source_paths,
        "dtype": _value_dtype(volumes, datasets, lo, hi),
        "range": [lo, hi],
        "series_id": candidate.id,
        "series_uid": first.series_uid,
        "series_description": first.series_description,
        "study_uid": str(header.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(header.get("FrameOfReferenceUID", "")),
        "transfer_syntax": str(header.file_meta.get("TransferSyntaxUID", "")),
        "dicom_sources": _sources(volumes),
        "dicom_template": _template(header),
        "channels": keys,
        "series_found": [describe(c) for c in candidates],
    }
    if len(volumes[0]) > 1:  # spacing_mm, max_residual_mm, n_slices, fit (see SliceGrid.meta)
        meta["slice_grid"] = fit_slice_grid(volumes[0]).meta()
    return Volume(array, affine, meta)


def _sources(volumes: Sequence[Sequence[SliceRecord]]) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for volume in volumes:
        for rec in volume:
            seen.setdefault((rec.sop_class_uid, rec.sop_instance_uid), None)
    return list(seen)


def _template(header: Dataset) -> Dataset:
    template = Dataset()
    for elem in header:
        if elem.keyword in _TEMPLATE_DROP:
            continue
        template.add(copy.deepcopy(elem))
    template.file_meta = copy.deepcopy(header.file_meta)
    return template


def _value_dtype(
    volumes: Sequence[Sequence[SliceRecord]], datasets: dict[Path, Dataset], lo: float, hi: float
) -> str:
    """The integer dtype that holds the rescaled values (range ``lo..hi``) exactly, else float32."""
    recs = [r for v in volumes for r in v]
    if any(r.slope != 1.0 or r.intercept != round(r.intercept) for r in recs):
        return "float32"
    stored = datasets[recs[0].path]
    bits = int(stored.get("BitsAllocated", 16))
    signed = int(stored.get("PixelRepresentation", 0)) == 1
    for name in ([f"int{bits}"] if signed else [f"uint{bits}"]) + ["int16", "int32"]:
        try:
            info = np.iinfo(name)
        except ValueError:
            continue
        if info.min <= lo and hi <= info.max:
            return name
    return "float32"


def _fill(
    stack: np.ndarray, volumes: Sequence[Sequence[SliceRecord]], datasets: dict[Path, Dataset], where: Path
) -> tuple[float, float]:
    """Decode, rescale and copy every plane into ``stack`` (C, Z, rows, cols).

    Files holding several planes (multi-frame, mosaic) are decoded once, first; single-plane
    files are decoded, copied and freed in a thread pool (numpy's copies and file reads
    release the GIL, so first-touch page faults and casts run on all cores).

    Returns:
        The value range ``(min, max)``, taken plane by plane while each is in cache.
    """
    uses = Counter(rec.path for volume in volumes for rec in volume)
    shared = {path: _decode(datasets[path], path) for path, n in uses.items() if n > 1}

    def copy_plane(c: int, k: int, rec: SliceRecord) -> tuple[float, float]:
        ds = datasets[rec.path]
        pixels = shared[rec.path] if rec.path in shared else _decode(ds, rec.path)
        plane = stack[c, k]
        plane[...] = _plane(rec, pixels)
        if rec.slope != 1.0 or rec.intercept != 0.0:
            plane *= np.float32(rec.slope)
            plane += np.float32(rec.intercept)
        if rec.path not in shared:
            _drop_pixels(ds)  # free the file's bytes once copied: peak memory ~ the output
        return float(plane.min()), float(plane.max())

    jobs = [(c, k, rec) for c, volume in enumerate(volumes) for k, rec in enumerate(volume)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(copy_plane, *job) for job in jobs]
        try:
            ranges = [future.result() for future in futures]  # re-raises the first InputError
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    for path in shared:
        _drop_pixels(datasets[path])
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def _plane(rec: SliceRecord, pixels: np.ndarray) -> np.ndarray:
    """The (rows, cols) plane of one record from its file's decoded pixels."""
    if rec.frame is not None:
        return (pixels[None] if pixels.ndim == 2 else pixels)[rec.frame]
    if rec.tile is not None:
        grid = pixels.shape[0] // rec.rows
        row, col = divmod(rec.tile, grid)
        return pixels[row * rec.rows : (row + 1) * rec.rows, col * rec.cols : (col + 1) * rec.cols]
    if pixels.shape != (rec.rows, rec.cols):
        raise InputError(
            f"pixel data of shape {pixels.shape} does not match Rows x Columns {rec.rows}x{rec.cols}",
            rec.path,
            "re-export the series",
        )
    return pixels


def _drop_pixels(ds: Dataset) -> None:
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            del ds[keyword]


def _has_integer_pixel_data(ds: Dataset) -> bool:
    """True when the pixel data are integers (then rescaled values are finite)."""
    return "PixelData" in ds


#: Uncompressed little-endian transfer syntaxes (Implicit VR, Explicit VR).
_NATIVE_LE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _decode_native(ds: Dataset) -> np.ndarray | None:
    """Uncompressed little-endian integer pixels straight from the buffer, or None when
    pydicom must handle them (float pixel data, sign extension of signed values stored in
    fewer bits, other syntaxes). Unsigned values stored in fewer bits are masked to those
    bits, as pydicom does. The same values as ``pixel_array``, about 20x faster."""
    bits = int(ds.get("BitsAllocated", 0))
    stored = int(ds.get("BitsStored", bits))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if "PixelData" not in ds or bits not in (8, 16, 32):
        return None
    if str(ds.file_meta.get("TransferSyntaxUID", "")) not in _NATIVE_LE:
        return None
    if signed and stored != bits:
        return None
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    buffer = ds.PixelData
    count = rows * cols * frames
    if len(buffer) < count * dtype.itemsize:
        return None  # short: let pydicom report it
    pixels = np.frombuffer(buffer, dtype=dtype, count=count)
    if not signed and 0 < stored < bits:
        pixels = pixels & dtype.type((1 << stored) - 1)  # drop overlay/junk bits above BitsStored
    return pixels.reshape((frames, rows, cols) if frames > 1 else (rows, cols))


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    syntax = ds.file_meta.get("TransferSyntaxUID")
    try:
        fast = _decode_native(ds)
        return fast if fast is not None else np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom raises many types for undecodable or short pixel data
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        compressed = syntax is not None and syntax.is_compressed
        if compressed:
            raise InputError(
                f"cannot decode pixel data in transfer syntax {syntax.name} ({reason})",
                path,
                "decompress the series first (e.g. `gdcmconv --raw` or `dcmdjpeg`), or install"
                " the pydicom plugin for this syntax (python-gdcm)",
            ) from None
        raise InputError(
            f"truncated or broken pixel data ({reason})",
            path,
            "the file is incomplete; copy or export it again",
        ) from None
