"""DICOM files -> per-slice records: classic single-frame, enhanced multi-frame, Siemens mosaic.

A :class:`SliceRecord` is one 2D image plane with its geometry straight from the
tags (LPS, mm), its rescale, its series identity and the keys that can tell
volumes of a 4D series apart (echo, time, diffusion...). Grouping and geometry
checks live in :mod:`mrisr.io.dicom_series`; pixel access in :mod:`mrisr.io.dicom_read`.
"""

from __future__ import annotations

import gzip
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from ..errors import InputError

__all__ = [
    "SliceRecord",
    "UnusableImage",
    "UNKNOWN_SERIES",
    "records_from_dataset",
    "read_header",
    "looks_like_dicom",
    "is_image_header",
]

#: The series UID given to images that lack one (they are grouped together).
UNKNOWN_SERIES = "unknown-series"

#: SOP Class UID of a DICOMDIR (Media Storage Directory Storage).
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

#: |row . col| above this means broken orientation tags (0.57 degrees off perpendicular).
ORTHOGONALITY_ATOL = 1e-2

#: Keys that may distinguish volumes of one series, in the order they are tried.
VOLUME_KEYS = (
    "stack_id",
    "echo_number",
    "echo_time",
    "temporal_position",
    "b_value",
    "gradient",
    "trigger_time",
    "acquisition_number",
    "mosaic_instance",
    "dimension_index",
)


class UnusableImage(InputError):
    """A valid DICOM image that mrisr cannot place in 3D (no geometry, colour...).

    Named alone it is an error; among other files (a study folder, a DICOMDIR) it is
    skipped, with a warning, as a screenshot or localizer next to the series would be.
    """


@dataclass
class SliceRecord:
    """One image plane.

    Attributes:
        path: the file it comes from.
        frame: frame index in a multi-frame file, else ``None``.
        tile: image index in a Siemens mosaic, else ``None``.
        rows, cols: matrix of the plane (DICOM Rows, Columns).
        row_cosine: unit direction (LPS) of increasing column index (IOP[:3]).
        col_cosine: unit direction (LPS) of increasing row index (IOP[3:]).
        position: ImagePositionPatient (LPS, mm) of the centre of the first pixel.
        pixel_spacing: (row spacing, column spacing) in mm, as in PixelSpacing.
        position_quanta: per coordinate, the rounding step (mm) of the stored position
            string (0.1 for "12.3"); 0 when exact, unknown or computed.
        orientation_quantum: the coarsest rounding step of the ImageOrientationPatient strings.
        slope, intercept: RescaleSlope and RescaleIntercept.
        keys: volume-distinguishing keys (see ``VOLUME_KEYS``), only those present.
    """

    path: Path
    frame: int | None
    tile: int | None
    series_uid: str
    series_number: int | None
    series_description: str
    sop_class_uid: str
    sop_instance_uid: str
    instance_number: int | None
    rows: int
    cols: int
    row_cosine: np.ndarray
    col_cosine: np.ndarray
    position: np.ndarray
    pixel_spacing: tuple[float, float]
    position_quanta: np.ndarray
    orientation_quantum: float
    slice_thickness: float | None
    spacing_between_slices: float | None
    slope: float
    intercept: float
    keys: dict[str, Any] = field(default_factory=dict)

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal (LPS): row_cosine x col_cosine."""
        n = np.cross(self.row_cosine, self.col_cosine)
        return n / np.linalg.norm(n)

    @property
    def label(self) -> str:
        """A short name for messages: the file, with frame or tile."""
        name = self.path.name
        if self.frame is not None:
            return f"{name} frame {self.frame + 1}"
        if self.tile is not None:
            return f"{name} tile {self.tile + 1}"
        return name


def looks_like_dicom(path: Path) -> bool:
    """True when the file has a DICOM preamble ('DICM' at byte 128), plain or gzip-compressed."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
        if head[:2] == b"\x1f\x8b":
            with gzip.open(path, "rb") as fh:
                head = fh.read(132)
    except (OSError, EOFError):
        return False
    return head[128:132] == b"DICM"


def read_header(path: Path) -> Dataset:
    """Read a DICOM file's header; large values (pixel data) are read later, on access.

    A gzip-compressed file (``.dcm.gz``, as nibabel and some archives ship them) is
    decompressed in memory and read whole.

    Raises:
        InputError: the file is not DICOM or cannot be parsed.
    """
    try:
        with open(path, "rb") as fh:
            compressed = fh.read(2) == b"\x1f\x8b"
        if compressed:
            with gzip.open(path, "rb") as fh:
                data = fh.read(132)
                if data[128:132] != b"DICM":  # a .nii.gz beside a series, say: not read whole
                    raise pydicom.errors.InvalidDicomError("gzip file without a DICOM preamble")
                return pydicom.dcmread(io.BytesIO(data + fh.read()))
        return pydicom.dcmread(path, defer_size="256 KB")
    except (pydicom.errors.InvalidDicomError, EOFError, OSError, ValueError, KeyError, gzip.BadGzipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"not a readable DICOM file ({reason})",
            path,
            "check that the file is a complete DICOM file, or remove it from the folder",
        ) from None


def _floats(value: Any, n: int, what: str, path: Path) -> np.ndarray:
    try:
        out = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        out = np.array([])
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise InputError(
            f"{what} is malformed ({value!r})",
            path,
            "the file's geometry tags are broken; re-export the series from the scanner or PACS",
        )
    return out


def _quanta(values: Any) -> np.ndarray:
    """The rounding step of each decimal string: 0.1 for '12.3', 1e-6 for '-6.4e-005',
    0 for whole numbers ('-120': exact) and for values without their original text."""
    out = []
    for v in values:
        text = getattr(v, "original_string", None)
        if not isinstance(text, str):
            out.append(0.0)
            continue
        mantissa, _, exponent = text.strip().lower().partition("e")
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        power = int(exponent) if exponent.lstrip("+-").isdigit() else 0
        out.append(10.0 ** (power - decimals) if decimals or power < 0 else 0.0)
    return np.array(out, dtype=np.float64)


def _optional_float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _plane_axes(iop: np.ndarray, spacing: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Unit row and column cosines from ImageOrientationPatient, checked with PixelSpacing.

    Raises:
        InputError: non-positive spacing, or cosines that are not unit, orthogonal directions.
    """
    if np.any(spacing <= 0):
        raise InputError(
            f"PixelSpacing must be positive, got {spacing.tolist()}",
            path,
            "the file's geometry tags are broken; re-export the series from the scanner or PACS",
        )
    row = _unit(iop[:3], "ImageOrientationPatient row cosine", path)
    col = _unit(iop[3:], "ImageOrientationPatient column cosine", path)
    if abs(float(row @ col)) > ORTHOGONALITY_ATOL:
        raise InputError(
            f"ImageOrientationPatient row and column are not perpendicular (cosine {float(row @ col):.4f})",
            path,
            "the file's geometry tags are broken; re-export the series from the scanner or PACS",
        )
    return row, col


def _unit(v: np.ndarray, what: str, path: Path) -> np.ndarray:
    norm = np.linalg.norm(v)
    if not 0.5 < norm < 1.5:
        raise InputError(
            f"{what} is not a unit direction (length {norm:.3f})",
            path,
            "the file's ImageOrientationPatient is broken; re-export the series",
        )
    return v / norm


def _first(seq_owner: Any, keyword: str) -> Dataset | None:
    seq = getattr(seq_owner, keyword, None) if seq_owner is not None else None
    return seq[0] if seq else None


def _functional(frame: Dataset | None, shared: Dataset | None, keyword: str) -> Dataset | None:
    """The item of a functional group macro, per-frame first, then shared."""
    return _first(frame, keyword) or _first(shared, keyword)


def _common(ds: Dataset, path: Path) -> dict[str, Any]:
    return {
        "path": path,
        "series_uid": str(ds.get("SeriesInstanceUID", "")) or UNKNOWN_SERIES,
        "series_number": _int_or_none(ds.get("SeriesNumber")),
        "series_description": str(ds.get("SeriesDescription", "")),
        "sop_class_uid": str(ds.get("SOPClassUID", "")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "instance_number": _int_or_none(ds.get("InstanceNumber")),
        "rows": int(ds.Rows),
        "cols": int(ds.Columns),
    }


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _classic_keys(ds: Dataset) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for key, keyword in (
        ("echo_number", "EchoNumbers"),
        ("echo_time", "EchoTime"),
        ("temporal_position", "TemporalPositionIdentifier"),
        ("trigger_time", "TriggerTime"),
        ("acquisition_number", "AcquisitionNumber"),
        ("b_value", "DiffusionBValue"),
    ):
        value = ds.get(keyword)
        if value is not None and value != "":
            keys[key] = _hashable(value)
    if "ImageType" in ds:
        keys["image_type"] = _hashable(ds.ImageType)
    if "DiffusionGradientOrientation" in ds:
        keys["gradient"] = _hashable(ds.DiffusionGradientOrientation)
    siemens_b = ds.get((0x0019, 0x100C))
    if "b_value" not in keys and siemens_b is not None and siemens_b.value not in (None, b""):
        keys["b_value"] = _hashable(_private_value(siemens_b.value))
    siemens_g = ds.get((0x0019, 0x100E))
    if "gradient" not in keys and siemens_g is not None and siemens_g.value not in (None, b""):
        keys["gradient"] = _hashable(_private_value(siemens_g.value))
    return keys


def _private_value(value: Any) -> Any:
    """A private tag's raw bytes as numbers (8-byte doubles) or text."""
    if isinstance(value, bytes):
        if len(value) % 8 == 0 and len(value) >= 8:
            return tuple(np.frombuffer(value, "<f8").round(6).tolist())
        return value.decode("latin-1", "replace").strip("\0 ")
    return value


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return tuple(_hashable(v) for v in value)
    if isinstance(value, float) or type(value).__name__ in ("DSfloat", "DSdecimal"):
        return round(float(value), 6)
    if type(value).__name__ == "IS":
        return int(value)
    return value if isinstance(value, (int, str, tuple)) else str(value)


def _plane_record(
    path: Path,
    common: dict[str, Any],
    keys: dict[str, Any],
    frame: int | None,
    position: Dataset,
    orientation: Dataset,
    measures: Dataset,
    transform: Dataset,
) -> SliceRecord:
    """One plane from the items holding its Plane Position, Plane Orientation, Pixel Measures
    and Pixel Value Transformation attributes: the dataset itself for a classic image, the
    functional group items (per-frame, else shared) for a frame of an enhanced image."""
    iop = _floats(orientation.ImageOrientationPatient, 6, "ImageOrientationPatient", path)
    ipp = _floats(position.ImagePositionPatient, 3, "ImagePositionPatient", path)
    spacing = _floats(measures.get("PixelSpacing", []), 2, "PixelSpacing", path)
    row, col = _plane_axes(iop, spacing, path)
    return SliceRecord(
        frame=frame,
        tile=None,
        row_cosine=row,
        col_cosine=col,
        position=ipp,
        pixel_spacing=(float(spacing[0]), float(spacing[1])),
        position_quanta=_quanta(position.ImagePositionPatient),
        orientation_quantum=float(_quanta(orientation.ImageOrientationPatient).max()),
        slice_thickness=_optional_float(measures.get("SliceThickness")),
        spacing_between_slices=_optional_float(measures.get("SpacingBetweenSlices")),
        slope=_optional_float(transform.get("RescaleSlope")) or 1.0,
        intercept=_optional_float(transform.get("RescaleIntercept")) or 0.0,
        keys=keys,
        **common,
    )


def _classic_records(ds: Dataset, path: Path) -> list[SliceRecord]:
    if "ImageOrientationPatient" not in ds or "ImagePositionPatient" not in ds:
        raise UnusableImage(
            "image has no ImagePositionPatient/ImageOrientationPatient, so no 3D geometry",
            path,
            "give mrisr a scanner-reconstructed series (not a screenshot or secondary capture)",
        )
    record = _plane_record(path, _common(ds, path), _classic_keys(ds), None, ds, ds, ds, ds)
    if _is_mosaic(ds):
        return _mosaic_records(ds, record)
    return [record]


def _is_mosaic(ds: Dataset) -> bool:
    image_type = [str(v).upper() for v in ds.get("ImageType", [])]
    return "MOSAIC" in image_type


def _mosaic_records(ds: Dataset, base: SliceRecord) -> list[SliceRecord]:
    """Split a Siemens mosaic into its tiles (CSA parsing by nibabel: it does it well)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom import dicomwrappers

        try:
            wrapper = dicomwrappers.MosaicWrapper(ds)
            n_tiles = int(wrapper.n_mosaic)
            first = np.asarray(wrapper.image_position, dtype=np.float64)
            csa_normal = np.asarray(wrapper.slice_normal, dtype=np.float64)
        except Exception as exc:  # nibabel raises several types for broken CSA headers
            raise InputError(
                f"Siemens mosaic without a readable CSA header ({exc})",
                base.path,
                "convert the series with dcm2niix, which knows more Siemens variants",
            ) from None
    grid = int(np.ceil(np.sqrt(n_tiles)))
    if base.rows % grid or base.cols % grid:
        raise InputError(
            f"mosaic of {base.rows}x{base.cols} pixels does not split into {grid}x{grid} tiles",
            base.path,
            "convert the series with dcm2niix",
        )
    step = base.spacing_between_slices
    if not step and base.slice_thickness:
        step = base.slice_thickness
        warnings.warn(
            f"{base.path}: Siemens mosaic without SpacingBetweenSlices; placing slices"
            f" SliceThickness = {step:g} mm apart (wrong if the protocol had a slice gap)",
            stacklevel=4,
        )
    if not step:
        raise InputError(
            "Siemens mosaic without SpacingBetweenSlices or SliceThickness",
            base.path,
            "convert the series with dcm2niix",
        )
    normal = csa_normal / np.linalg.norm(csa_normal)
    keys = dict(base.keys, mosaic_instance=base.instance_number)
    records = []
    for t in range(n_tiles):
        rec = SliceRecord(**{**base.__dict__})
        rec.tile = t
        rec.rows, rec.cols = base.rows // grid, base.cols // grid
        rec.position = first + t * step * normal
        rec.position_quanta = np.zeros(3)
        rec.keys = keys
        records.append(rec)
    return records


def _enhanced_records(ds: Dataset, path: Path) -> list[SliceRecord]:
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if len(per_frame) != n_frames:
        raise InputError(
            f"multi-frame file has {n_frames} frames but {len(per_frame)} per-frame groups",
            path,
            "re-export the series; the enhanced DICOM header is incomplete",
        )
    common = _common(ds, path)
    records = []
    for f, frame in enumerate(per_frame):
        plane_pos = _functional(frame, shared, "PlanePositionSequence")
        plane_ori = _functional(frame, shared, "PlaneOrientationSequence")
        measures = _functional(frame, shared, "PixelMeasuresSequence")
        if plane_pos is None or plane_ori is None or measures is None:
            raise UnusableImage(
                f"enhanced multi-frame image without plane position/orientation for frame {f + 1}",
                path,
                "give mrisr a series with geometry (this looks like a frame set without it)",
            )
        transform = _functional(frame, shared, "PixelValueTransformationSequence") or ds
        keys = _enhanced_keys(frame, shared)
        records.append(_plane_record(path, common, keys, f, plane_pos, plane_ori, measures, transform))
    return records


def _enhanced_keys(frame: Dataset, shared: Dataset | None) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    content = _first(frame, "FrameContentSequence")
    if content is not None:
        for key, keyword in (
            ("stack_id", "StackID"),
            ("temporal_position", "TemporalPositionIndex"),
        ):
            if keyword in content:
                keys[key] = _hashable(content.get(keyword))
        if "DimensionIndexValues" in content:
            keys["dimension_index"] = _hashable(content.DimensionIndexValues)
    echo = _functional(frame, shared, "MREchoSequence")
    if echo is not None and "EffectiveEchoTime" in echo:
        keys["echo_time"] = _hashable(echo.EffectiveEchoTime)
    diffusion = _functional(frame, shared, "MRDiffusionSequence")
    if diffusion is not None:
        if "DiffusionBValue" in diffusion:
            keys["b_value"] = _hashable(diffusion.DiffusionBValue)
        direction = _first(diffusion, "DiffusionGradientDirectionSequence")
        if direction is not None and "DiffusionGradientOrientation" in direction:
            keys["gradient"] = _hashable(direction.DiffusionGradientOrientation)
    frame_type = _functional(frame, shared, "MRImageFrameTypeSequence")
    if frame_type is not None and "FrameType" in frame_type:
        keys["image_type"] = _hashable(frame_type.FrameType)
    timing = _functional(frame, shared, "CardiacSynchronizationSequence")
    if timing is not None and "NominalCardiacTriggerDelayTime" in timing:
        keys["trigger_time"] = _hashable(timing.NominalCardiacTriggerDelayTime)
    return keys


def has_pixel_data(ds: Dataset) -> bool:
    return any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))


def is_image_header(ds: Dataset) -> bool:
    """An image object's header (image SOP class, Rows, plane position) whatever its pixels."""
    sop_class = str(ds.get("SOPClassUID", ds.file_meta.get("MediaStorageSOPClassUID", "")))
    if sop_class:  # spectroscopy, raw data... have Rows or positions but are no images
        return "Image Storage" in pydicom.uid.UID(sop_class).name
    return any(k in ds for k in ("Rows", "ImagePositionPatient", "PerFrameFunctionalGroupsSequence"))


def records_from_dataset(ds: Dataset, path: Path) -> list[SliceRecord]:
    """The image planes of one DICOM file (several for multi-frame and mosaic).

    Returns an empty list for DICOM objects that hold no pixel data (DICOMDIR, structured
    reports, RT structures, and image headers whose pixels are missing: the caller
    decides whether that is a cut file, see :func:`is_image_header`).

    Raises:
        InputError: an image without the geometry mrisr needs, or a colour image.
    """
    if not has_pixel_data(ds):
        if len(ds) == 0:  # pydicom stops quietly at the end of a cut file
            raise InputError(
                "truncated: no data set after the file meta", path, "the file is incomplete; copy or export it again"
            )
        return []
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
        raise UnusableImage(
            f"colour image ({ds.get('PhotometricInterpretation', '?')}), not an MR magnitude image",
            path,
            "give mrisr a greyscale MR series",
        )
    if "Rows" not in ds or "Columns" not in ds:
        raise InputError("image without Rows/Columns", path, "re-export the series")
    if "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_records(ds, path)
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise UnusableImage(
            "multi-frame image without per-frame geometry (functional groups)",
            path,
            "export the series as single-frame DICOM or enhanced MR with functional groups",
        )
    return _classic_records(ds, path)
