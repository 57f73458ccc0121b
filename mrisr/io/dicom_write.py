"""Write a :class:`~mrisr.volume.Volume` as a derived DICOM series (DESIGN.md "DICOM out").

One classic single-frame MR Image Storage file per slice, Explicit VR Little
Endian, written with pydicom. Geometry is converted from mrisr's RAS affine to
DICOM's LPS only here (``diag(-1, -1, 1, 1)``).

Axis mapping, voxel ``(i, j, k)`` of ``array[c]`` (shape ``(X, Y, Z)``):
``i`` (X) is the DICOM column index, ``j`` (Y) the row index, ``k`` the slice.
So ``Rows = Y``, ``Columns = X``, the stored frame of slice ``k`` is
``array[c, :, :, k].T``, ImageOrientationPatient is
``[unit(LPS column 0), unit(LPS column 1)]`` and PixelSpacing is
``[spacing Y (row spacing), spacing X (column spacing)]``.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from ..errors import GeometryError, InputError, OutputError
from ..volume import GEOMETRY_ATOL_MM, Volume, world_corners
from .formats import DICOM_FILE_ENDING
from .intensity import to_numpy
from .lps import flip_lps_ras

__all__ = [
    "SliceGeometry",
    "IntensityMapping",
    "dicom_geometry",
    "intensity_mapping",
    "to_stored",
    "window",
    "write_dicom_series",
]

DEFAULT_DERIVATION = "mrisr super-resolution / conversion"

#: SeriesDescription of a series written without a template, and the suffix added
#: to a template's description (never twice: a derived series derived again keeps it).
GENERATED_DESCRIPTION = "mrisr derived"
DERIVED_SUFFIX = " mrisr"

#: Written only when there is no template: a generated series is not a real
#: patient. PatientPosition "HFS" (head first supine) is a placeholder too;
#: without it dcm2niix warns.
GENERATED_PATIENT = {
    "PatientName": "mrisr^generated",
    "PatientID": "MRISR-GENERATED",
    "PatientPosition": "HFS",
    "Manufacturer": "mrisr",
}

#: Copied from ``meta["dicom_template"]``: patient, study, frame of reference,
#: equipment and acquisition attributes. Never pixel, geometry or per-instance ones.
TEMPLATE_KEYWORDS = (
    # patient
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "PatientAge", "PatientSize", "PatientWeight", "PatientIdentityRemoved",
    "DeidentificationMethod",
    # study
    "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
    "ReferringPhysicianName", "StudyDescription",
    # frame of reference
    "FrameOfReferenceUID", "PositionReferenceIndicator",
    # equipment (the scanner; mrisr is named in ContributingEquipmentSequence)
    "Manufacturer", "ManufacturerModelName", "InstitutionName", "StationName",
    "DeviceSerialNumber",
    # acquisition
    "ProtocolName", "BodyPartExamined", "PatientPosition", "MagneticFieldStrength",
    "ImagingFrequency", "ImagedNucleus", "EchoTime", "RepetitionTime", "InversionTime",
    "FlipAngle", "EchoTrainLength", "EchoNumbers", "NumberOfAverages", "PixelBandwidth",
    "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType",
    "SequenceName", "ReceiveCoilName", "TransmitCoilName", "ContrastBolusAgent",
)  # fmt: skip


@dataclass(frozen=True)
class SliceGeometry:
    """What DICOM stores of a grid, all in LPS millimetres.

    Attributes:
        orientation: ``(6,)`` ImageOrientationPatient: row direction cosine (along
            increasing column index = voxel X) then column direction cosine (voxel Y).
        pixel_spacing: PixelSpacing ``(row spacing = spacing Y, column spacing = spacing X)``.
        slice_spacing: distance between slice centres along the normal (mm).
        normal: ``(3,)`` ``cross(row, column)``, the axis readers sort slices on.
        positions: ``(Z, 3)`` ImagePositionPatient (centre of the first pixel) per slice.
        slice_locations: ``(Z,)`` SliceLocation, the positions projected on ``normal``.
    """

    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    normal: np.ndarray
    positions: np.ndarray
    slice_locations: np.ndarray


def dicom_geometry(affine: np.ndarray, shape: Sequence[int]) -> SliceGeometry:
    """The DICOM geometry of a RAS voxel-centre ``affine`` on a grid of ``shape`` ``(X, Y, Z)``.

    The slice axis may point along ``+normal`` or ``-normal`` (left-handed affines):
    positions are written per slice from the affine and readers sort on the normal,
    so any axis order and sign round-trips. What DICOM cannot store is shear: the
    geometry a reader rebuilds (orthonormal in-plane cosines, slices stacked along
    the normal) must put the field-of-view corners within ``GEOMETRY_ATOL_MM``.

    Raises:
        GeometryError: the affine is sheared beyond that tolerance.
    """
    shape = [int(n) for n in shape[-3:]]
    lps = flip_lps_ras(affine)
    cols = lps[:3, :3]
    spacing = np.linalg.norm(cols, axis=0)
    row = cols[:, 0] / spacing[0]
    col = cols[:, 1] - row * (row @ cols[:, 1])  # Gram-Schmidt: DICOM cosines are orthogonal
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    slice_step = float(cols[:, 2] @ normal)  # signed: negative for left-handed stacks
    stored = np.eye(4)
    stored[:3, :3] = np.column_stack([row * spacing[0], col * spacing[1], normal * slice_step])
    stored[:3, 3] = lps[:3, 3]
    error = np.abs(world_corners(stored, shape) - world_corners(lps, shape)).max()
    if error > GEOMETRY_ATOL_MM:
        raise GeometryError(
            f"the affine is sheared (its axes are not orthogonal): stored as DICOM the "
            f"field of view would move by {error:.3g} mm, more than {GEOMETRY_ATOL_MM} mm",
            path="affine",
            fix="resample to an orthogonal grid first, or write NIfTI, which stores shear",
        )
    index = np.column_stack(
        [np.zeros(shape[2]), np.zeros(shape[2]), np.arange(shape[2]), np.ones(shape[2])]
    )
    positions = (index @ lps.T)[:, :3]
    return SliceGeometry(
        orientation=np.concatenate([row, col]),
        pixel_spacing=(float(spacing[1]), float(spacing[0])),
        slice_spacing=abs(slice_step),
        normal=normal,
        positions=positions,
        slice_locations=positions @ normal,
    )


@dataclass(frozen=True)
class IntensityMapping:
    """Real value = ``stored * slope + intercept`` (RescaleSlope / RescaleIntercept).

    ``dtype`` is the stored type, ``"int16"`` or ``"uint16"``; ``slope`` and
    ``intercept`` are exactly the values their DS strings (``slope_ds``,
    ``intercept_ds``) hold, so the writer quantises as readers will decode.
    """

    dtype: str
    slope: float
    intercept: float

    @property
    def slope_ds(self) -> str:
        return format_number_as_ds(self.slope)

    @property
    def intercept_ds(self) -> str:
        return format_number_as_ds(self.intercept)


def _ds_round(value: float) -> float:
    return float(format_number_as_ds(float(value)))


def intensity_mapping(data: Any) -> IntensityMapping:
    """How to store ``data`` (any shape, real values) in 16 bits without clipping or wrapping.

    Integer values within int16 (else uint16) range are stored exactly (slope 1,
    intercept 0). Anything else maps ``[min, max]`` onto the full int16 range
    (uint16 when ``min >= 0``) less half a count at each end, so that rounding
    never clips: the error is at most ``(max - min) / 131068``.

    Raises:
        InputError: empty data, NaN or infinite values.
    """
    values = np.asarray(data, dtype=np.float64)
    if values.size == 0:
        raise InputError("the volume is empty", path="array")
    if not np.all(np.isfinite(values)):
        raise InputError(
            "the volume holds NaN or infinite values, which DICOM cannot store",
            path="array",
            fix="replace them first, e.g. numpy.nan_to_num",
        )
    lo, hi = float(values.min()), float(values.max())
    if np.array_equal(values, np.round(values)):
        if lo >= -32768 and hi <= 32767:
            return IntensityMapping("int16", 1.0, 0.0)
        if lo >= 0 and hi <= 65535:
            return IntensityMapping("uint16", 1.0, 0.0)
    dtype = "uint16" if lo >= 0 else "int16"
    info = np.iinfo(dtype)
    if hi == lo:
        return IntensityMapping(dtype, 1.0, _ds_round(lo))
    slope = _ds_round((hi - lo) / (float(info.max) - float(info.min) - 1.0))
    intercept = _ds_round(lo - (float(info.min) + 0.5) * slope)
    return IntensityMapping(dtype, slope, intercept)


def to_stored(data: Any, mapping: IntensityMapping) -> np.ndarray:
    """``data`` as stored integers, ``round((data - intercept) / slope)``, same shape."""
    values = (np.asarray(data, dtype=np.float64) - mapping.intercept) / mapping.slope
    info = np.iinfo(mapping.dtype)
    # The clip only absorbs DS rounding of extreme intercepts; values never wrap.
    return np.clip(np.rint(values), info.min, info.max).astype(mapping.dtype)


def window(data: Any) -> tuple[float, float, str]:
    """WindowCenter, WindowWidth (real values) and VOILUTFunction from the 1st-99th percentiles.

    Width is at least 1 as DICOM's LINEAR function demands; data whose whole range
    is under 1 gets ``LINEAR_EXACT``, which allows any positive width.
    """
    values = np.asarray(data, dtype=np.float64)
    p1, p99 = (float(p) for p in np.percentile(values, [1.0, 99.0]))
    span = float(values.max() - values.min())
    if span >= 1.0:
        return (p1 + p99) / 2.0, max(p99 - p1, 1.0), "LINEAR"
    width = p99 - p1 if p99 > p1 else max(span, 1e-6)
    return (p1 + p99) / 2.0, width, "LINEAR_EXACT"


def _ds(values: Any) -> Any:
    """One DS string or a list of them, at most 16 characters each (full precision)."""
    if np.ndim(values) == 0:
        return format_number_as_ds(float(values))
    return [format_number_as_ds(float(v)) for v in np.ravel(values)]


def _version() -> str:
    # imported late: mrisr/__init__.py re-exports io, so a top-level import could be circular
    from .. import __version__

    return str(__version__)


def _copy_template(template: Dataset, ds: Dataset) -> None:
    for keyword in TEMPLATE_KEYWORDS:
        if keyword in template:
            elem = copy.deepcopy(template[keyword])
            if elem.VR == "PN" and elem.value is not None:
                # re-encode in our character set (ISO_IR 192), not the source's
                elem.value = str(elem.value)
            ds[keyword] = elem


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "DCM"
    item.CodeMeaning = meaning
    return item


def _sources(meta: dict[str, Any], template: Dataset | None) -> list[tuple[str, str]]:
    sources = meta.get("dicom_sources")
    if sources is None and template is not None and "SOPInstanceUID" in template:
        sources = [(template.get("SOPClassUID", MRImageStorage), template.SOPInstanceUID)]
    return [(str(cls), str(uid)) for cls, uid in (sources or [])]


def _description(template: Dataset) -> str:
    """The template's SeriesDescription marked as derived by mrisr, at most 64 characters."""
    described = str(template.get("SeriesDescription", "") or "").strip()
    if not described:
        return GENERATED_DESCRIPTION
    if described == GENERATED_DESCRIPTION or described.endswith(DERIVED_SUFFIX):
        return described  # already mrisr's: do not stack suffixes
    return f"{described}{DERIVED_SUFFIX}"[-64:]


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _channel_attributes(keys: Any) -> dict[str, tuple[str, Any]]:
    """DICOM attributes ``{keyword: (VR, value)}`` for one channel's acquisition keys.

    ``keys`` is one item of ``meta["channels"]`` as the reader found it: ``b_value``,
    ``gradient`` (3 numbers, e.g. Siemens' tuple of floats), ``echo_time`` and
    ``echo_number``. Values that are missing or not what DICOM stores are left out.
    """
    if not isinstance(keys, dict):
        return {}
    out: dict[str, tuple[str, Any]] = {}
    b_value = _finite(keys.get("b_value"))
    if b_value is not None and b_value >= 0:
        out["DiffusionBValue"] = ("FD", b_value)
    gradient = keys.get("gradient")
    if isinstance(gradient, (list, tuple, np.ndarray)) and len(gradient) == 3:
        vector = [_finite(v) for v in gradient]
        if all(v is not None for v in vector):
            out["DiffusionGradientOrientation"] = ("FD", vector)
    echo_time = _finite(keys.get("echo_time"))
    if echo_time is not None and echo_time >= 0:
        out["EchoTime"] = ("DS", _ds(echo_time))
    echo_number = _finite(keys.get("echo_number"))
    if echo_number is not None and echo_number == round(echo_number):
        out["EchoNumbers"] = ("IS", int(echo_number))
    return out


def _channels(meta: dict[str, Any], n_channels: int) -> list[dict[str, tuple[str, Any]]]:
    """Per-channel attributes from ``meta["channels"]``; none when its length is not ``C``."""
    channels = meta.get("channels")
    if not isinstance(channels, (list, tuple)) or len(channels) != n_channels:
        return [{} for _ in range(n_channels)]
    return [_channel_attributes(keys) for keys in channels]


def _series_dataset(volume: Volume, now: dt.datetime) -> Dataset:
    """The attributes shared by every file of the series (no per-slice ones)."""
    meta = volume.meta
    template = meta.get("dicom_template")
    if template is not None and not isinstance(template, Dataset):
        raise InputError(
            f"meta['dicom_template'] must be a pydicom Dataset, got {type(template).__name__}",
            path="meta['dicom_template']",
        )
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    # Type 1/2 attributes, empty where allowed; the template overrides them. Generated
    # patient values only without a template: next to a real (possibly anonymised)
    # PatientID they would be false, so a template's missing or empty name stays empty.
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = meta.get("study_uid") or generate_uid()
    ds.StudyDate, ds.StudyTime = ("", "") if template is not None else (date, time)
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.FrameOfReferenceUID = meta.get("frame_of_reference_uid") or generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = ""
    ds.ScanningSequence = "RM"  # research mode: no acquisition is known
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = ""  # unknown; "3D" makes dcm2niix rotate the voxel axes
    ds.PatientPosition = ""
    ds.EchoTime = ""
    ds.EchoTrainLength = ""
    ds.RepetitionTime = ""
    ds.InversionTime = ""
    image_type = ["DERIVED", "SECONDARY"]
    if template is None:
        for keyword, value in GENERATED_PATIENT.items():
            setattr(ds, keyword, value)
        note = "Generated by mrisr: not a real patient; patient and study fields are placeholders"
        ds.PatientComments = note
        ds.ImageComments = note
        ds.SeriesNumber = 1001
        ds.SeriesDescription = GENERATED_DESCRIPTION
    else:
        _copy_template(template, ds)
        # The source's 3rd/4th values (e.g. M\ND); never MOSAIC: a derived slice is one plane.
        image_type += [str(v) for v in list(template.get("ImageType", []))[2:4] if str(v).upper() != "MOSAIC"]
        ds.SeriesNumber = int(template.get("SeriesNumber") or 1) + 1000
        ds.SeriesDescription = _description(template)
    ds.Modality = "MR"
    ds.SOPClassUID = MRImageStorage
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ContentDate, ds.ContentTime = date, time
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.ImageType = image_type
    ds.DerivationDescription = str(meta.get("derivation", DEFAULT_DERIVATION))[:1024]
    ds.SoftwareVersions = f"mrisr {_version()}"
    equipment = Dataset()
    equipment.Manufacturer = "mrisr"
    equipment.ManufacturerModelName = "mrisr"
    equipment.SoftwareVersions = _version()
    equipment.ContributionDateTime = now.strftime("%Y%m%d%H%M%S.%f")
    equipment.ContributionDescription = ds.DerivationDescription
    equipment.PurposeOfReferenceCodeSequence = [_code("109103", "Modifying Equipment")]
    ds.ContributingEquipmentSequence = [equipment]
    references = []
    for sop_class, sop_instance in _sources(meta, template):
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        item.PurposeOfReferenceCodeSequence = [
            _code("121322", "Source image for image processing operation")
        ]
        references.append(item)
    if references:
        ds.SourceImageSequence = references
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.RescaleType = "US"
    return ds


def write_dicom_series(volume: Volume, folder: Path) -> list[Path]:
    """Write ``volume`` as a new derived MR series, one file per slice and channel.

    Args:
        volume: ``array`` ``(C, X, Y, Z)`` (numpy or torch), ``affine`` RAS voxel-centre
            mm. ``meta`` may hold ``dicom_template`` (the source's header, a pydicom
            ``Dataset``), ``dicom_sources`` (``(SOPClassUID, SOPInstanceUID)`` pairs),
            ``derivation``, ``channels`` (one dict of acquisition keys per channel,
            as the DICOM reader sets it), and without a template ``study_uid`` /
            ``frame_of_reference_uid``.
        folder: created if needed; :func:`mrisr.io.save` passes a fresh temporary
            folder and handles the atomic rename and ``--force``. Files of the same
            names already there are overwritten.

    With a template its patient, study and acquisition attributes are copied as
    they are (an empty or missing PatientName stays empty). Without one the
    series is marked as generated: PatientName ``mrisr^generated``, PatientID
    ``MRISR-GENERATED``, PatientPosition ``HFS`` (a placeholder; readers such as
    dcm2niix expect one), and a comment saying it is not a real patient.

    Channels ``c`` are written as temporal positions ``c + 1`` of one series, with
    InstanceNumber ``c * Z + k + 1`` for slice ``k``. When ``meta["channels"]`` has
    one entry per channel, each channel's ``b_value``, ``gradient`` (a 3-vector),
    ``echo_time`` and ``echo_number`` are written back on its slices as
    DiffusionBValue, DiffusionGradientOrientation, EchoTime and EchoNumbers; a list
    of another length is ignored. One rescale slope/intercept and one window serve
    the whole series.

    Returns:
        The files written (``IM_0001.dcm``...), in InstanceNumber order.

    Raises:
        GeometryError: a sheared affine; InputError: NaN/infinite values or a bad
        template; OutputError: ``folder`` is an existing file, or it or its files
        cannot be written (any ``OSError``).
    """
    folder = Path(folder)
    array = to_numpy(volume.array)
    n_channels, nx, ny, nz = (int(n) for n in array.shape)
    geometry = dicom_geometry(volume.affine, (nx, ny, nz))
    mapping = intensity_mapping(array)
    stored = to_stored(array, mapping)
    center, width, voi_function = window(array)
    total = n_channels * nz
    width_digits = max(4, len(str(total)))
    paths = [folder / f"IM_{n + 1:0{width_digits}d}{DICOM_FILE_ENDING}" for n in range(total)]
    if folder.exists() and not folder.is_dir():
        raise OutputError("exists and is not a folder", path=folder, fix="choose another output")

    ds = _series_dataset(volume, dt.datetime.now())
    channels = _channels(volume.meta, n_channels)
    ds.Rows, ds.Columns = ny, nx
    ds.PixelSpacing = _ds(geometry.pixel_spacing)
    ds.ImageOrientationPatient = _ds(geometry.orientation)
    ds.SliceThickness = _ds(geometry.slice_spacing)
    ds.SpacingBetweenSlices = _ds(geometry.slice_spacing)
    ds.PixelRepresentation = 1 if mapping.dtype == "int16" else 0
    ds.RescaleSlope = mapping.slope_ds
    ds.RescaleIntercept = mapping.intercept_ds
    ds.WindowCenter = _ds(center)
    ds.WindowWidth = _ds(width)
    if voi_function != "LINEAR":
        ds.VOILUTFunction = voi_function
    if n_channels > 1:
        ds.NumberOfTemporalPositions = n_channels

    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = MRImageStorage
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    file_meta.ImplementationVersionName = f"MRISR_{_version()}"[:16]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_files(ds, file_meta, stored, geometry, channels, paths)
    except OSError as error:
        raise OutputError(
            f"cannot write DICOM files: {error.strerror or error}",
            path=folder,
            fix="check that the folder is writable and the disk has space",
        ) from error
    return paths


def _write_files(
    ds: Dataset,
    file_meta: FileMetaDataset,
    stored: np.ndarray,
    geometry: SliceGeometry,
    channels: list[dict[str, tuple[str, Any]]],
    paths: list[Path],
) -> None:
    """One file per slice and channel: ``ds`` plus the per-instance attributes."""
    n_channels, _, _, nz = stored.shape
    per_channel = {keyword for attributes in channels for keyword in attributes}
    # the series-level value (e.g. the template's EchoTime) for channels without their own
    series_level = {keyword: copy.deepcopy(ds[keyword]) for keyword in per_channel if keyword in ds}
    for c in range(n_channels):
        for keyword in per_channel:
            if keyword in channels[c]:
                vr, value = channels[c][keyword]
                ds.add_new(keyword, vr, value)
            elif keyword in series_level:
                ds[keyword] = copy.deepcopy(series_level[keyword])
            elif keyword in ds:
                del ds[keyword]
        for k in range(nz):
            number = c * nz + k + 1
            sop_uid = generate_uid()
            ds.file_meta = copy.deepcopy(file_meta)
            ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
            ds.SOPInstanceUID = sop_uid
            ds.InstanceNumber = number
            ds.AcquisitionNumber = c + 1
            if n_channels > 1:
                ds.TemporalPositionIdentifier = c + 1
            ds.ImagePositionPatient = _ds(geometry.positions[k])
            ds.SliceLocation = _ds(geometry.slice_locations[k])
            frame = np.ascontiguousarray(stored[c, :, :, k].T)  # (Rows = Y, Columns = X)
            ds.add_new(0x7FE00010, "OW", frame.astype(frame.dtype.newbyteorder("<")).tobytes())
            pydicom.dcmwrite(paths[number - 1], ds, enforce_file_format=True)
