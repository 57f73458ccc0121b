"""Gather DICOM files: a folder (recursive), a list, a zip/tar archive or a DICOMDIR.

Archives are extracted into a temporary folder that is removed afterwards; an
entry with an absolute path, a ``..`` component or a link is refused before
anything is extracted, so nothing is ever written outside that folder.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from ..errors import InputError

__all__ = ["dicom_files", "is_archive", "extracted"]

#: Files skipped when walking a folder: never DICOM, often present.
_SKIP_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


def is_archive(path: Path) -> bool:
    """True for a zip file or a (possibly compressed) tar file, by content."""
    if zipfile.is_zipfile(path):
        return True
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError, gzip.BadGzipFile):
        return False


def _check_member(name: str, is_link: bool, archive: Path) -> None:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":") or is_link:
        what = "a link" if is_link else "an absolute path or '..'"
        raise InputError(
            f"unsafe archive entry {name!r} ({what}); refusing to extract anything",
            archive,
            "re-create the archive with relative paths inside one folder",
        )


@contextmanager
def extracted(archive: Path) -> Iterator[Path]:
    """Extract ``archive`` into a temporary folder; yield the folder; remove it after."""
    tmp = Path(tempfile.mkdtemp(prefix="mrisr-archive-"))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
                    _check_member(info.filename, is_link, archive)
                zf.extractall(tmp)
        else:
            try:
                with tarfile.open(archive) as tf:
                    members = tf.getmembers()
                    for m in members:
                        _check_member(m.name, m.issym() or m.islnk(), archive)
                    tf.extractall(tmp, members=[m for m in members if m.isfile() or m.isdir()],
                                  filter="data")
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise InputError(
                    f"broken tar archive ({exc})", archive, "re-create the archive"
                ) from None
        yield tmp
    except zipfile.BadZipFile as exc:
        raise InputError(f"broken zip archive ({exc})", archive, "re-create the archive") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _walk(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name in _SKIP_NAMES or name.startswith("._"):
                continue
            files.append(Path(root) / name)
    return files


def dicom_files(paths: Sequence[Path]) -> list[Path]:
    """The files to parse as DICOM: folders are walked recursively, files kept as given."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(_walk(path))
        else:
            files.append(path)
    return files
