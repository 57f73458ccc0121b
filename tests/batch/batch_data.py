"""Tiny batch inputs made in the tests: NIfTI files, DICOM series folders, a zip, a tar, a corrupt
file, an exact duplicate; and a tiny untrained VDSR checkpoint as the model."""

from __future__ import annotations

import shutil
import sqlite3
import tarfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
from conftest import phantom_affine
from dicom_factory import write_series

SHAPE = (8, 8, 6)
SPACING = (1.0, 1.0, 3.0)


def tiny_model(folder: Path) -> Path:
    """An untrained 2D VDSR (4 features, 3 layers) saved as a checkpoint; returns its card."""
    import torch

    from mrisr.models.card import save_checkpoint
    from mrisr.nets import VDSR

    torch.manual_seed(0)
    return save_checkpoint(VDSR(2, features=4, depth=3), folder, {"note": "untrained, for batch tests"})


def nifti(path: Path, seed: int, shape: tuple[int, int, int] = SHAPE,
          spacing: tuple[float, float, float] = SPACING) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(0, 1000, shape).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), path)
    return path


def series(folder: Path, seed: int, number: int = 1, description: str = "T2 AX", n_slices: int = 5) -> list[Path]:
    data = np.random.default_rng(seed).integers(0, 1000, (8, 6, n_slices)).astype(np.int16)
    affine = phantom_affine(0, seed, spacing=(1.0, 1.0, 3.0), oblique_deg=5.0)
    return write_series(folder, data, affine, description=description, series_number=number,
                        name_prefix=f"S{number}")


def _zip(archive: Path, folder: Path) -> None:
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())


def _tar(archive: Path, folder: Path) -> None:
    with tarfile.open(archive, "w:gz") as tf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                tf.add(p, p.relative_to(folder).as_posix())


def archive_tree(root: Path, staging: Path) -> dict[str, int]:
    """``root`` with 30 good items (12 NIfTI files, 8 DICOM series in folders, a zip of 4 series
    and 2 NIfTI, a tar.gz of 3 series and a NIfTI), one corrupt NIfTI and one exact duplicate.

    Returns:
        ``{"good": 30, "corrupt": 1, "duplicate": 1, "items": 32}``.
    """
    seed = 100
    for s in range(1, 5):
        for k in range(3):
            seed += 1
            nifti(root / f"sub-{s:02d}" / "anat" / f"sub-{s:02d}_acq-{k}_T2w.nii.gz", seed)
    for k in range(8):
        seed += 1
        series(root / "dicom" / f"study{k // 2}" / f"series{k % 2}", seed, number=k + 1)
    zipped = staging / "zip"
    for k in range(4):
        seed += 1
        series(zipped / f"s{k}", seed, number=20 + k, description="T2 FLAIR")
    for k in range(2):
        seed += 1
        nifti(zipped / "vols" / f"v{k}.nii.gz", seed)
    (root / "pacs").mkdir(parents=True)
    _zip(root / "pacs" / "export.zip", zipped)
    tarred = staging / "tar"
    for k in range(3):
        seed += 1
        series(tarred / "dcm" / f"s{k}", seed, number=30 + k, description="T1 SE")
    nifti(tarred / "vol.nii.gz", seed + 1)
    _tar(root / "pacs" / "more.tar.gz", tarred)
    (root / "broken" ).mkdir()
    (root / "broken" / "corrupt.nii.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    shutil.copy(root / "sub-01" / "anat" / "sub-01_acq-0_T2w.nii.gz", root / "broken" / "copy_of_sub01.nii.gz")
    return {"good": 30, "corrupt": 1, "duplicate": 1, "items": 32}


def ledger_rows(out: Path, name: str = "mrisr-ledger.sqlite") -> list[dict]:
    """The ledger's rows, read with plain sqlite3 (read-only)."""
    conn = sqlite3.connect(f"{(out / name).resolve().as_uri()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM items ORDER BY seq")]
    finally:
        conn.close()


def done_rows(out: Path, name: str = "mrisr-ledger.sqlite") -> int:
    """How many items the ledger in ``out`` marks done, read-only while a batch writes it (0 before it exists)."""
    path = out / name
    if not path.is_file():
        return 0
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM items WHERE state='done'").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:  # created but without its table yet
        return 0


def files_on_disk(out: Path) -> set[str]:
    """Every file under ``out`` (relative POSIX paths) except the ledgers, locks and summaries."""
    return {
        p.relative_to(out).as_posix() for p in out.rglob("*")
        if p.is_file() and not p.name.startswith(("mrisr-ledger", "mrisr-summary"))
    }
