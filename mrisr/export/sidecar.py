"""JSON sidecars: what produced an output, from what, with which parameters.

The sidecar of ``out.nii.gz`` is ``out.json``; of a DICOM series folder ``out`` it is
``out.json`` beside the folder. It is written atomically, like every output.
"""

from __future__ import annotations

import hashlib
import json
import math
from os import PathLike
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_output
from ..io.formats import SCENE_ENDING, WRITE_FILE_ENDINGS, strip_ending

__all__ = ["sidecar_path", "write_sidecar", "sha256_file", "json_ready"]

#: Output endings that the sidecar name replaces.
_SUFFIXES = (*WRITE_FILE_ENDINGS, SCENE_ENDING)


def sidecar_path(output: str | PathLike[str]) -> Path:
    """``out.json`` for ``out.nii.gz``, ``out.nrrd``... or a series folder ``out``."""
    path = Path(output)
    return path.with_name(strip_ending(path.name, _SUFFIXES) + ".json")


def sha256_file(path: str | PathLike[str]) -> str:
    """The sha256 of a file's bytes, or of a folder's files (sorted relative paths and bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def json_ready(value: Any, *, nan: Any = "nan") -> Any:
    """``value`` as strict JSON: infinities as ``"inf"``/``"-inf"``, NaN as ``nan`` (default the
    string ``"nan"``), numpy/torch arrays and scalars as lists and numbers, paths as text."""
    if isinstance(value, dict):
        return {str(k): json_ready(v, nan=nan) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v, nan=nan) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return nan if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, PathLike):
        return str(value)
    if not isinstance(value, (str, int, float, bool, type(None))) and callable(getattr(value, "tolist", None)):
        return json_ready(value.tolist(), nan=nan)
    return value


def write_sidecar(output: str | PathLike[str], data: dict[str, Any], force: bool = False) -> Path:
    """Write ``data`` as the JSON sidecar of ``output`` (atomically); returns its path."""
    path = sidecar_path(output)
    with atomic_output(path, force) as tmp:
        tmp.write_text(json.dumps(json_ready(data), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path
