"""Generate classic single-frame MR DICOM series with pydicom, independently of mrisr's writer.

Geometry is given directly in DICOM terms (LPS), so tests can compare what
mrisr reads with what was written, tag by tag.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def seeded_data(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Distinct-looking int16 values, so that any axis mix-up shows."""
    return np.random.default_rng(seed).integers(-1000, 3000, shape).astype(np.int16)


def tag_projections(paths: Sequence[Path]) -> np.ndarray:
    """The stored ImagePositionPatient of each file projected on the slice normal (row x column of
    the stored ImageOrientationPatient), sorted, mm: a reference read straight from the tags."""
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    iop = np.array([float(v) for v in headers[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    normal /= np.linalg.norm(normal)
    stored = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in headers])
    return np.sort(stored @ normal)


def lps_geometry(affine_ras: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(row cosine, column cosine, (row spacing, col spacing), slice step vector) in LPS
    for an affine whose voxel axes are (column index, row index, slice)."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    sx, sy = np.linalg.norm(lps[:3, 0]), np.linalg.norm(lps[:3, 1])
    return lps[:3, 0] / sx, lps[:3, 1] / sy, np.array([sy, sx]), lps[:3, 2]


def _fmt(values: Sequence[float], decimals: int | None) -> list[str]:
    if decimals is None:
        return [f"{v:.10g}"[:16] for v in values]
    return [f"{round(v, decimals):.{decimals}f}" for v in values]


def write_series(
    folder: Path,
    data: np.ndarray,
    affine_ras: np.ndarray,
    *,
    series_uid: str | None = None,
    study_uid: str | None = None,
    description: str = "generated",
    series_number: int = 1,
    position_decimals: int | None = None,
    positions: np.ndarray | None = None,
    slice_indices: Sequence[int] | None = None,
    extra: dict | None = None,
    name_prefix: str = "IM",
    frame_uid: str | None = None,
    first_instance: int = 1,
) -> list[Path]:
    """Write ``data`` (X, Y, Z) integer array as one file per slice.

    Args:
        folder: output folder (created).
        data: (X, Y, Z) values, stored as int16.
        affine_ras: 4x4 RAS voxel-centre affine; X = DICOM column index, Y = row index.
        position_decimals: round ImagePositionPatient strings to this many decimals
            (None: full precision), as real scanners do.
        positions: override the (Z, 3) LPS positions (for gaps, tilt...).
        slice_indices: write only these slices (to make a missing slice), default all.
        extra: more attributes set on every slice.
        name_prefix: file names are ``{name_prefix}_{n:04d}.dcm``.
        frame_uid: FrameOfReferenceUID (default: a new one), to write several
            volumes of one 4D series with several calls.
        first_instance: InstanceNumber of the first slice written.

    Returns:
        The written paths, in slice order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    row, col, pixel_spacing, step = lps_geometry(affine_ras)
    origin = (np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras)[:3, 3]
    nx, ny, nz = data.shape
    if positions is None:
        positions = np.array([origin + k * step for k in range(nz)])
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    paths = []
    for n, k in enumerate(slice_indices if slice_indices is not None else range(nz)):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        sop_uid = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.Modality = "MR"
        ds.PatientName = "Phantom^Test"
        ds.PatientID = "PHANTOM"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.InstanceNumber = first_instance + n
        ds.ImageOrientationPatient = _fmt([*row, *col], None if position_decimals is None else 6)
        ds.ImagePositionPatient = _fmt(positions[k], position_decimals)
        ds.PixelSpacing = _fmt(pixel_spacing, None)
        ds.SliceThickness = f"{np.linalg.norm(step):.6g}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = "1"
        ds.RescaleIntercept = "0"
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(data[:, :, k].T.astype("<i2")).tobytes()
        path = folder / f"{name_prefix}_{n + 1:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def tag_corners(paths: Sequence[Path]) -> np.ndarray:
    """The 8 FOV corners (RAS mm) computed straight from the tags of a classic series.

    Slice direction: the normal (row x col); origin: the first position along it;
    slice spacing: (last - first projection) / (n - 1); pixel axes from
    ImageOrientationPatient and PixelSpacing. Independent of mrisr's reader.
    """
    sets = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    iop = np.array([float(v) for v in sets[0].ImageOrientationPatient])
    row, col = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    ipp = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in sets])
    d = ipp @ normal
    first = ipp[np.argmin(d)]
    n = len(sets)
    step = (d.max() - d.min()) / (n - 1) if n > 1 else float(sets[0].SliceThickness)
    dr, dc = (float(v) for v in sets[0].PixelSpacing)
    nx, ny = int(sets[0].Columns), int(sets[0].Rows)
    corners = []
    for i in (-0.5, nx - 0.5):
        for j in (-0.5, ny - 0.5):
            for k in (-0.5, n - 0.5):
                corners.append(first + i * dc * row + j * dr * col + k * step * normal)
    return np.array(corners) * np.array([-1.0, -1.0, 1.0])


# --- independent references: tags, SimpleITK, dcm2niix -------------------------------

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def corner_distance(a: np.ndarray, b: np.ndarray) -> float:
    """How far two sets of FOV corners are apart (mm), whatever order each reader lists them in:
    the largest distance from a corner of one set to the nearest corner of the other, both ways."""
    d = np.linalg.norm(np.asarray(a, float)[:, None] - np.asarray(b, float)[None], axis=-1)
    return float(max(d.min(axis=0).max(), d.min(axis=1).max()))


def plane_corners(
    iop: Sequence[float],
    positions: np.ndarray,
    pixel_spacing: Sequence[float],
    rows: int,
    cols: int,
    thickness: float | None = None,
) -> np.ndarray:
    """The 8 FOV corners (RAS mm) of a stack of planes given by raw tag values (LPS).

    Slice axis: the normal row x col; slice spacing: span of the positions along it / (n - 1),
    or ``thickness`` for a single plane. Same rule as :func:`tag_corners`.
    """
    iop = np.array([float(v) for v in iop])
    row, col = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    ipp = np.atleast_2d(np.asarray(positions, dtype=np.float64))
    d = ipp @ normal
    n = len(ipp)
    if n > 1:
        step = (d.max() - d.min()) / (n - 1)
    else:
        assert thickness, "a single plane needs a through-plane size"
        step = float(thickness)
    first = ipp[np.argmin(d)]
    dr, dc = (float(v) for v in pixel_spacing)
    corners = [
        first + i * dc * row + j * dr * col + k * step * normal
        for i in (-0.5, cols - 0.5)
        for j in (-0.5, rows - 0.5)
        for k in (-0.5, n - 0.5)
    ]
    return np.array(corners) * np.array([-1.0, -1.0, 1.0])


def _functional(ds: Dataset, frame: Dataset, keyword: str) -> Dataset:
    if keyword in frame:
        return frame[keyword].value[0]
    return ds.SharedFunctionalGroupsSequence[0][keyword].value[0]


def enhanced_tag_corners(ds: Dataset, frames: Sequence[int] | None = None) -> np.ndarray:
    """FOV corners (RAS mm) of frames of an enhanced multi-frame file, straight from the
    per-frame (or shared) PlanePosition/PlaneOrientation/PixelMeasures sequences.

    One frame: the through-plane size is the PixelMeasuresSequence SliceThickness.
    """
    per_frame = ds.PerFrameFunctionalGroupsSequence
    frames = list(range(len(per_frame))) if frames is None else list(frames)
    first = per_frame[frames[0]]
    iop = _functional(ds, first, "PlaneOrientationSequence").ImageOrientationPatient
    measures = _functional(ds, first, "PixelMeasuresSequence")
    positions = [
        [float(v) for v in _functional(ds, per_frame[f], "PlanePositionSequence").ImagePositionPatient]
        for f in frames
    ]
    thickness = float(measures.SliceThickness) if "SliceThickness" in measures else None
    return plane_corners(iop, np.array(positions), measures.PixelSpacing, int(ds.Rows), int(ds.Columns), thickness)


def sitk_series(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's ImageSeriesReader on a folder: array ``(X, Y, Z)`` float64 and RAS voxel-centre affine
    (its LPS origin, direction and spacing converted here)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    lps = np.eye(4)
    lps[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    return array.astype(np.float64), LPS_TO_RAS @ lps


def dcm2niix_images(exe: str, source: Path, out: Path) -> list:
    """Run dcm2niix on a file or folder; the NIfTI images (nibabel) it wrote, sorted by name."""
    import subprocess

    import nibabel as nib

    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [exe, "-z", "n", "-b", "n", "-f", "%s_%e", "-o", str(out), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [nib.load(p) for p in sorted(out.glob("*.nii"))]
