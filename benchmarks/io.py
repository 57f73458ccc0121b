"""I/O benchmark: load a generated DICOM series with mrisr, SimpleITK and dcm2niix.

The series (default 512x512x400, classic single-frame MR, uint16, 0.5x0.5 mm pixels,
1 mm slice spacing, oblique, explicit VR little endian) is written once with pydicom into
``benchmarks/out/`` (gitignored) and reused. Each tool then loads it ``--repeats`` times
with a warm page cache; the median is reported with its ratio to SimpleITK.
Goal (issue): ``mrisr.load`` within 1.5x of SimpleITK.

    python benchmarks/io.py                      # full size, print the table
    python benchmarks/io.py --size 64 64 20      # quick check
    python benchmarks/io.py --write              # also append the result to RESULTS.md
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import machine_info as common_machine_info
from common import time_runs

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
RESULTS = HERE / "RESULTS.md"
GOAL_RATIO = 1.5

PIXEL_SPACING_MM = (0.5, 0.5)  # DICOM PixelSpacing: [row spacing, column spacing]
SLICE_SPACING_MM = 1.0


def oblique_orientation() -> tuple[np.ndarray, np.ndarray]:
    """Row and column direction cosines (LPS): axial tilted 15 deg about x, 10 deg about z."""
    a, c = np.deg2rad(15.0), np.deg2rad(10.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    rot = rz @ rx
    return rot[:, 0], rot[:, 1]


def phantom_slice(rows: int, cols: int, k: int, n_slices: int) -> np.ndarray:
    """A smooth uint16 slice (an ellipsoid with a ramp) so compression-free I/O sees real data."""
    y = np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None]
    x = np.linspace(-1.0, 1.0, cols, dtype=np.float32)[None, :]
    z = 2.0 * k / max(n_slices - 1, 1) - 1.0
    r2 = x**2 + (1.2 * y) ** 2 + (0.9 * z) ** 2
    img = np.where(r2 < 0.8, 1000.0 + 800.0 * x + 300.0 * z, 50.0)
    return img.astype(np.uint16)


def generate_series(folder: Path, cols: int, rows: int, n_slices: int) -> None:
    """Write ``n_slices`` classic MR files (``rows x cols``) with pydicom, one Dataset reused."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid()

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.Modality = "MR"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.PatientName = "Bench^IO"
    ds.PatientID = "mrisr-bench"
    ds.StudyDate = ds.SeriesDate = "20260101"
    ds.StudyTime = ds.SeriesTime = "120000"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = 1
    ds.SeriesDescription = f"bench {cols}x{rows}x{n_slices}"
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = 500.0
    ds.EchoTime = 10.0
    ds.MagneticFieldStrength = 3.0
    ds.SliceThickness = SLICE_SPACING_MM
    ds.SpacingBetweenSlices = SLICE_SPACING_MM
    ds.PixelSpacing = list(PIXEL_SPACING_MM)
    row_dir, col_dir = oblique_orientation()
    normal = np.cross(row_dir, col_dir)
    ds.ImageOrientationPatient = [round(float(v), 8) for v in (*row_dir, *col_dir)]
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0

    # Centre the field of view on the origin.
    extent = (
        row_dir * PIXEL_SPACING_MM[1] * (cols - 1)
        + col_dir * PIXEL_SPACING_MM[0] * (rows - 1)
        + normal * SLICE_SPACING_MM * (n_slices - 1)
    )
    first = -extent / 2.0
    for k in range(n_slices):
        position = first + normal * SLICE_SPACING_MM * k
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [round(float(v), 6) for v in position]
        ds.SliceLocation = round(float(position @ normal), 6)
        ds.PixelData = phantom_slice(rows, cols, k, n_slices).tobytes()
        ds.save_as(tmp / f"IM{k + 1:05d}.dcm", enforce_file_format=True)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def warm_page_cache(folder: Path) -> None:
    for path in sorted(folder.iterdir()):
        with open(path, "rb") as f:
            while f.read(1 << 22):
                pass


def find_dcm2niix() -> str | None:
    local = Path(sys.executable).parent / "dcm2niix"  # the PyPI package's binary in a venv
    return str(local) if local.exists() else shutil.which("dcm2niix")


def bench_mrisr(folder: Path, repeats: int) -> list[float] | str:
    try:
        import mrisr

        load = mrisr.load
    except (ImportError, AttributeError) as exc:
        return f"mrisr.load not available ({type(exc).__name__})"

    def run() -> None:
        vol = load(folder)
        np.asarray(vol.array).sum()  # touch the data, in case a loader is ever lazy

    return time_runs(run, repeats)


def bench_simpleitk(folder: Path, repeats: int) -> list[float] | str:
    try:
        import SimpleITK as sitk
    except ImportError:
        return "SimpleITK not available"

    def run() -> None:
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
        image = reader.Execute()
        sitk.GetArrayViewFromImage(image).sum()

    return time_runs(run, repeats)


def bench_dcm2niix(folder: Path, repeats: int) -> list[float] | str:
    exe = find_dcm2niix()
    if exe is None:
        return "dcm2niix not available"

    def run() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-dcm2niix-") as tmp:
            subprocess.run(
                [exe, "-z", "n", "-b", "n", "-o", tmp, str(folder)],
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    return time_runs(run, repeats)


def machine_info() -> dict[str, str]:
    info = common_machine_info()
    exe = find_dcm2niix()
    if exe:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
        lines = (out.stdout + out.stderr).strip().splitlines()
        info["dcm2niix"] = lines[-1] if lines else "unknown"
    else:
        info["dcm2niix"] = "not installed"
    return info


def table(rows: list[tuple[str, list[float] | str]]) -> str:
    ref = dict(rows).get("SimpleITK ImageSeriesReader")
    ref_median = statistics.median(ref) if isinstance(ref, list) else None
    lines = ["| tool | median s | ratio to SimpleITK |", "|---|---:|---:|"]
    for name, result in rows:
        if isinstance(result, str):
            lines.append(f"| {name} | {result} | |")
            continue
        median = statistics.median(result)
        ratio = f"{median / ref_median:.2f}" if ref_median else "n/a"
        lines.append(f"| {name} | {median:.3f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size", nargs=3, type=int, default=[512, 512, 400], metavar=("COLS", "ROWS", "SLICES")
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="append the result to RESULTS.md")
    args = parser.parse_args(argv)
    cols, rows, n_slices = args.size
    if min(args.size) < 1 or args.repeats < 1:
        parser.error("--size and --repeats must be positive")

    folder = OUT / f"dicom_{cols}x{rows}x{n_slices}"
    if not folder.is_dir():
        print(f"generating {n_slices} slices of {cols}x{rows} in {folder} ...", flush=True)
        start = time.perf_counter()
        generate_series(folder, cols, rows, n_slices)
        print(f"generated in {time.perf_counter() - start:.1f} s", flush=True)
    warm_page_cache(folder)

    rows_out: list[tuple[str, list[float] | str]] = [
        ("mrisr.load", bench_mrisr(folder, args.repeats)),
        ("SimpleITK ImageSeriesReader", bench_simpleitk(folder, args.repeats)),
        ("dcm2niix (CLI, also writes .nii)", bench_dcm2niix(folder, args.repeats)),
    ]
    result = table(rows_out)
    info = machine_info()
    size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    title = (
        f"Load a {cols}x{rows}x{n_slices} DICOM series ({n_slices} files, {size_mb:.0f} MB), "
        f"median of {args.repeats}, warm page cache"
    )
    print(title)
    print(result)
    mrisr_times, sitk_times = rows_out[0][1], rows_out[1][1]
    verdict = "n/a"
    if isinstance(mrisr_times, list) and isinstance(sitk_times, list):
        ratio = statistics.median(mrisr_times) / statistics.median(sitk_times)
        verdict = f"{'met' if ratio <= GOAL_RATIO else 'NOT met'} ({ratio:.2f}x)"
    print(f"goal: mrisr.load within {GOAL_RATIO}x of SimpleITK: {verdict}")
    print("; ".join(f"{k}: {v}" for k, v in info.items()))

    if args.write:
        with open(RESULTS, "a", encoding="utf-8") as f:
            f.write(f"\n### {title}\n\n")
            f.write("\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n\n")
            f.write(result + "\n\n")
            f.write(f"Goal, mrisr.load within {GOAL_RATIO}x of SimpleITK: {verdict}.\n")
        print(f"appended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
