"""Atomic output: write to a temporary path beside the destination, then rename.

A reader never sees a half-written output, an interrupted write leaves nothing
behind, an existing output is only replaced with ``force``, and an input is
never overwritten, not even with ``force``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputError

__all__ = ["atomic_output"]


def _suffixes(dest: Path) -> str:
    """The full suffixes of ``dest`` (``'.nii.gz'`` for ``'t1.nii.gz'``, ``''`` for a folder)."""
    return "".join(dest.suffixes)


def _sibling(dest: Path, tag: str) -> Path:
    """A path that does not exist yet, in dest's folder, ending in dest's suffixes."""
    while True:
        candidate = dest.with_name(f".{dest.name}.{tag}-{secrets.token_hex(4)}{_suffixes(dest)}")
        if not os.path.lexists(candidate):
            return candidate


def _remove(path: Path) -> None:
    """Remove a file, link or folder tree at ``path`` if anything is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        path.unlink(missing_ok=True)


def _is_same_or_inside(source: Path, dest: Path) -> bool:
    """Whether ``source`` is ``dest`` itself or lies inside the folder ``dest``."""
    if source.exists() and dest.exists():
        try:
            if os.path.samefile(source, dest):  # also catches hard links
                return True
        except OSError:
            pass
    src, dst = source.resolve(), dest.resolve()
    return src == dst or dst in src.parents


def _check_sources(dest: Path, sources: Sequence[str | os.PathLike[str]]) -> None:
    for source in sources:
        if _is_same_or_inside(Path(source), dest):
            raise OutputError(
                f"output would overwrite the input {source}; inputs are never modified, even with force",
                dest,
                fix="choose another output path",
            )


def _commit(tmp: Path, dest: Path) -> None:
    """Move the finished ``tmp`` onto ``dest``, replacing what is there."""
    if not os.path.lexists(tmp):
        raise OutputError(
            "the writer produced nothing at the temporary path",
            dest,
            fix="report this as a bug in mrisr",
        )
    folder_involved = (tmp.is_dir() and not tmp.is_symlink()) or (dest.is_dir() and not dest.is_symlink())
    if not (folder_involved and os.path.lexists(dest)):
        os.replace(tmp, dest)  # atomic for files on one file system
        return
    # A folder cannot be swapped atomically: move the old one aside, rename, then delete it.
    old = _sibling(dest, "old")
    os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    _remove(old)


@contextmanager
def atomic_output(
    dest: str | os.PathLike[str],
    force: bool,
    sources: Sequence[str | os.PathLike[str]] = (),
) -> Iterator[Path]:
    """Yield a temporary path to write ``dest`` at; rename it onto ``dest`` on success.

    The temporary path is in dest's folder (so the rename stays on one file
    system) and ends in dest's full suffixes, e.g. ``.t1.nii.gz.tmp-1a2b3c4d.nii.gz``
    for ``t1.nii.gz``, so that nibabel and SimpleITK choose the format from it.
    The writer may create a file or a folder (e.g. a DICOM series) there.

    Args:
        dest: the output file or folder.
        force: replace ``dest`` if it exists.
        sources: the inputs; ``dest`` may be none of them (nor a folder holding one),
            whatever ``force`` says.

    Raises:
        OutputError: ``dest`` is an input, or exists and ``force`` is false.

    On any exception inside the ``with`` block the temporary file or folder is
    removed, ``dest`` is left as it was, and the exception propagates.
    """
    dest = Path(dest)
    _check_sources(dest, sources)
    if os.path.lexists(dest) and not force:
        raise OutputError(
            "output already exists",
            dest,
            fix="pass --force / force=True to replace it, or choose another output path",
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the output folder {dest.parent}: {exc.strerror or exc}",
            dest,
            fix="check the path and its permissions",
        ) from exc
    tmp = _sibling(dest, "tmp")
    try:
        yield tmp
        _commit(tmp, dest)
    except BaseException:
        _remove(tmp)
        raise
