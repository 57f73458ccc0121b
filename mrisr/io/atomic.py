"""Atomic output: write to a temporary path beside the destination, then rename.

A reader never sees a half-written output, an interrupted write leaves nothing
behind, an existing output is only replaced with ``force``, and an input is
never overwritten, not even with ``force``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import MrisrError, OutputError

__all__ = ["atomic_output", "check_writable", "replace_folder"]

#: The file names of a DICOM series that mrisr writes (``IM_0001.dcm``...): the
#: only content of a folder that ``force`` may delete, and only when their
#: SoftwareVersions names mrisr.
_SERIES_FILE = re.compile(r"IM_\d+\.dcm")


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


def _check_not_a_protected_folder(dest: Path) -> None:
    """Refuse the root, the home folder, the working folder and the folders above them."""
    try:
        target = dest.resolve()
    except (OSError, RuntimeError):  # a symlink loop: judge the path as written
        target = Path(os.path.abspath(dest))
    protected: dict[Path, str] = {}
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the working folder was deleted
        cwd = None
    if cwd is not None:
        protected.update({p: "a folder above the current folder" for p in cwd.parents})
        protected[cwd] = "the current folder"
    try:
        protected.setdefault(Path.home().resolve(), "your home folder")
    except (RuntimeError, KeyError, OSError):  # no home folder to find
        pass
    protected[Path(target.anchor)] = "the filesystem root"
    if target in protected:
        raise OutputError(
            f"is {protected[target]}; refusing to write there, even with force",
            dest,
            fix="choose a new folder",
        )
    if dest.name in ("", ".", ".."):  # e.g. 'a/..': a folder reference, not a name to write at
        raise OutputError(
            "names an existing folder by reference ('.' or '..'), not an output; refusing to write there",
            dest,
            fix="choose a new folder",
        )


def _is_folder(path: Path) -> bool:
    """A folder itself, not a link to one (a link is replaced, not what it points at)."""
    return path.is_dir() and not path.is_symlink()


def _written_by_mrisr(path: Path) -> bool:
    """A DICOM file whose SoftwareVersions names mrisr (some exporters use IM_0001.dcm too)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SoftwareVersions"])
    except Exception:  # unreadable: not ours, so not ours to delete
        return False
    return "mrisr" in str(ds.get("SoftwareVersions", "")).lower()


def _check_replaceable_folder(dest: Path) -> None:
    """Refuse to delete a folder that holds anything but an mrisr DICOM series."""
    try:
        entries = sorted(os.scandir(dest), key=lambda e: e.name)
    except OSError as exc:
        raise OutputError(
            f"cannot list the existing folder: {exc.strerror or exc}",
            dest,
            fix="check its permissions, or choose a new folder",
        ) from exc
    for entry in entries:
        if not (
            _SERIES_FILE.fullmatch(entry.name)
            and entry.is_file(follow_symlinks=False)
            and _written_by_mrisr(Path(entry.path))
        ):
            raise OutputError(
                f"holds files that are not an mrisr DICOM series (e.g. {entry.name}); refusing to delete them",
                dest,
                fix="choose a new folder",
            )


def _check_same_kind(tmp: Path, dest: Path) -> None:
    """Never swap a folder for a file or a file for a folder, even with force."""
    if not os.path.lexists(dest):
        return
    if _is_folder(dest) and not _is_folder(tmp):
        raise OutputError(
            "is a folder; refusing to replace a folder with a file",
            dest,
            fix="choose another output path, or remove the folder yourself",
        )
    if _is_folder(tmp) and not _is_folder(dest):
        raise OutputError(
            "is a file; refusing to replace a file with a folder",
            dest,
            fix="choose another output path, or remove the file yourself",
        )


def _commit(tmp: Path, dest: Path) -> None:
    """Move the finished ``tmp`` onto ``dest``, replacing what is there."""
    if not os.path.lexists(tmp):
        raise OutputError(
            "the writer produced nothing at the temporary path",
            dest,
            fix="report this as a bug in mrisr",
        )
    _check_same_kind(tmp, dest)
    if not _is_folder(dest):
        os.replace(tmp, dest)  # atomic for files on one file system
        return
    _check_replaceable_folder(dest)  # again: it may have changed while the writer ran
    replace_folder(tmp, dest)


def replace_folder(tmp: Path, dest: Path) -> None:
    """Put the finished folder ``tmp`` at ``dest``, an existing folder the caller checked may go.

    A folder cannot be swapped atomically: the old one moves aside, ``tmp`` is renamed, then the
    old one is deleted; if the rename fails the old one is put back.
    """
    if not os.path.lexists(dest):
        os.replace(tmp, dest)
        return
    old = _sibling(dest, "old")
    os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    _remove(old)


def _in_terms_of_dest(exc: MrisrError, tmp: Path, dest: Path) -> None:
    """Reword ``exc`` in place to name dest, not the temporary path (same class, same traceback)."""

    def swap(text: str | None) -> str | None:
        return None if text is None else text.replace(tmp.name, dest.name)

    exc.problem, exc.path, exc.fix = swap(exc.problem), swap(exc.path), swap(exc.fix)
    exc.args = (exc.one_line(),)


def _cannot_write(exc: OSError, tmp: Path, dest: Path) -> OutputError:
    reason = exc.strerror or str(exc).replace(tmp.name, dest.name)
    return OutputError(
        f"cannot write: {reason}",
        dest,
        fix="check that the folder exists and is writable",
    )


def _nearest_existing(path: Path) -> Path:
    """``path`` or the closest folder above it that exists (where a new output would be made)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _probe_folder(folder: Path, dest: Path, probe: bool) -> None:
    """Whether a file can be made in ``folder``: with ``probe``, create and delete a hidden file
    there (the one test that also holds for root, full quotas and network file systems); else,
    writing nothing, the mount's read-only flag and the permission bits.

    In ``dest``'s own folder the probe is named as :func:`atomic_output` names ``dest``'s
    temporaries (``.<name>.tmp-*``), so that one left by a process killed between creating and
    deleting it is cleaned with them (:func:`mrisr.batch.outputs.remove_stale_temporaries`)."""
    fix = ("choose a writable output location (check the folder's permissions and that its disk is not mounted"
           " read-only)")
    if not probe:
        try:
            read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        except OSError:  # statvfs unsupported: judge by the permission bits alone
            read_only = False
        if read_only or not os.access(folder, os.W_OK | os.X_OK):
            reason = "its file system is mounted read-only" if read_only else "permission denied"
            raise OutputError(f"cannot write in {folder}: {reason}", dest, fix=fix)
        return
    here = Path(os.path.abspath(folder))
    own_folder = Path(os.path.abspath(dest)) != here and Path(os.path.abspath(dest)).parent == here
    name = _sibling(dest, "tmp") if own_folder else folder / f".mrisr-write-test-{secrets.token_hex(4)}"
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise OutputError(f"cannot write in {folder}: {exc.strerror or exc}", dest, fix=fix) from exc
    os.close(fd)
    os.unlink(name)


def check_writable(
    dest: str | os.PathLike[str],
    force: bool = False,
    sources: Sequence[str | os.PathLike[str]] = (),
    *,
    folder: bool = False,
    kind: str | None = None,
    probe: bool = True,
) -> Path:
    """Refuse, before any compute, an output that :func:`atomic_output` would refuse or could not write.

    Checks, in milliseconds: ``dest`` is not an input; unless ``folder``, it is no protected
    folder (root, home, the working folder and those above it, which :func:`atomic_output`
    never replaces) and, existing, needs ``force`` and must be replaceable by what the writer
    makes (``kind``); the place ``dest`` would be written is a folder (not a file) in which a
    file can be created.

    Args:
        dest: the output file or folder.
        force: an existing ``dest`` may be replaced.
        sources: the inputs, which ``dest`` may never be (nor hold).
        folder: ``dest`` is a folder that the command writes into (batch, train): an existing
            one (or a link to one) is checked inside and needs no ``force``.
        kind: what the writer makes: ``"file"`` (an existing folder is never replaced by one) or
            ``"series"`` (a DICOM series folder: an existing file is never replaced by one, and an
            existing folder only when it holds nothing but an mrisr series); None: not checked.
        probe: create and delete a hidden test file (default: the sure test); False writes
            nothing and reads the mount's read-only flag and the permission bits (dry runs).

    Returns:
        ``dest`` as a ``Path``.

    Raises:
        OutputError: one line naming ``dest``, the problem and the fix.
    """
    dest = Path(dest)
    if not folder:  # a folder written into is never replaced or deleted: the working folder may be one
        _check_not_a_protected_folder(dest)
    _check_sources(dest, sources)
    exists = os.path.lexists(dest)
    if folder:
        if exists and not dest.is_dir():
            raise OutputError("is a file, not a folder", dest, fix="choose a folder path for this output")
    elif exists:
        if not force:
            raise OutputError(
                "output already exists",
                dest,
                fix="pass --force / force=True to replace it, or choose another output path",
            )
        if kind == "file" and _is_folder(dest):
            raise OutputError("is a folder; refusing to replace a folder with a file", dest,
                              fix="choose another output path, or remove the folder yourself")
        if kind == "series":
            if not _is_folder(dest):
                raise OutputError("is a file; refusing to replace a file with a folder", dest,
                                  fix="choose another output path, or remove the file yourself")
            _check_replaceable_folder(dest)
    where = dest if folder and exists else _nearest_existing(dest.parent)
    if not where.is_dir():
        raise OutputError(
            f"cannot be created: {where} is a file, not a folder",
            dest,
            fix="choose an output path inside a folder",
        )
    _probe_folder(where, dest, probe)
    return dest


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

    Safe with ``force``: an existing file is only replaced by a file and an
    existing folder only by a folder, and only if it holds nothing but an
    mrisr DICOM series (``IM_<digits>.dcm`` files); the filesystem root, the
    home folder, the current folder and the folders above it are never written.

    Args:
        dest: the output file or folder.
        force: replace ``dest`` if it exists (within the rules above).
        sources: the inputs; ``dest`` may be none of them (nor a folder holding one),
            whatever ``force`` says.

    Raises:
        OutputError: ``dest`` is an input or a protected folder, exists and
            ``force`` is false, is a folder that is not an mrisr series, or is of
            the other kind (file/folder) than what the writer made; an
            ``OSError`` while writing or renaming (as "cannot write").

    On any exception inside the ``with`` block the temporary file or folder is
    removed, ``dest`` is left as it was, and the exception propagates; an
    ``MrisrError`` that names the temporary path is reworded to name ``dest``.
    """
    dest = Path(dest)
    _check_not_a_protected_folder(dest)
    _check_sources(dest, sources)
    if os.path.lexists(dest):
        if not force:
            raise OutputError(
                "output already exists",
                dest,
                fix="pass --force / force=True to replace it, or choose another output path",
            )
        if _is_folder(dest):
            _check_replaceable_folder(dest)
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
        try:
            yield tmp
            _commit(tmp, dest)
        except MrisrError as exc:
            _in_terms_of_dest(exc, tmp, dest)
            raise
        except OSError as exc:
            raise _cannot_write(exc, tmp, dest) from exc
    except BaseException:
        _remove(tmp)
        raise
