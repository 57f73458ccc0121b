"""One upscale job: read a scan, super-resolve it, write the result and its JSON sidecar.

:func:`upscale_file` is what ``mrisr upscale`` runs once and what every ``mrisr batch``
worker runs per item: ``load`` -> model (resolved and cached per process) -> ``upscale``
-> ``save`` (or a Slicer ``.mrb``) -> sidecar. Outputs are written atomically
(:mod:`mrisr.io.atomic`); both output paths are checked before any work, so that an
existing output without ``force`` costs nothing.

Models are cached per process (:func:`cached_model`), keyed by the resolved model spec
(the path or shipped name :func:`mrisr.models.resolve_model` gives for the volume) and the
device, so a batch worker loads each model once, not once per item.

torch is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..errors import InputError, OutputError
from ..export.sidecar import sha256_file, sidecar_path, write_sidecar
from ..io import load, save
from ..io.atomic import check_writable
from ..io.formats import ARCHIVE_ENDINGS, SCAN_ENDINGS, SCENE_ENDING, WRITE_FILE_ENDINGS, strip_ending

if TYPE_CHECKING:
    from ..models.loaded import LoadedModel

__all__ = ["cached_model", "check_outputs", "clear_model_cache", "upscale_file", "volume_name",
           "one_or_three"]

#: The fields of :func:`mrisr.infer.upscale`'s record that the sidecar repeats: what ran, and how.
_RECORDED = ("ran", "identity_grid", "spatial_dims", "coarse_axis", "upsampled_axes", "fused_orthogonal",
             "roi_size", "non_negative_input", "clipped_below_zero", "amp", "precision", "perceptual",
             "perceptual_note")



_CACHE: dict[tuple[str, str], LoadedModel] = {}


def cached_model(spec: str | os.PathLike[str], device: str) -> LoadedModel:
    """The model ``spec`` on ``device``, loaded once per process (see :func:`mrisr.infer.load_model`).

    Args:
        spec: a checkpoint path (card, weights, folder or run folder) or a shipped model's name.
        device: a resolved device (``cpu``, ``cuda``, ``cuda:N``), as text.
    """
    key = (_identity(spec), str(device))
    if key not in _CACHE:
        from ..models.loaded import load_model

        _CACHE[key] = load_model(spec, device)
    return _CACHE[key]


def _identity(spec: str | os.PathLike[str]) -> str:
    """What ``spec`` points at now: a shipped name's card or a path, resolved, with its mtime and
    size, so a replaced checkpoint (or another models folder) is never served from the cache."""
    from ..models.registry import shipped_models

    text = os.fspath(spec)
    path = shipped_models().get(text, Path(text))
    try:
        stat = path.stat()
    except OSError:
        return text
    return f"{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}"


def clear_model_cache() -> None:
    """Forget the cached models (tests; a worker that must free GPU memory)."""
    _CACHE.clear()


def _resolve_spec(model: str | os.PathLike[str] | None, volume: Any) -> str | os.PathLike[str]:
    """``model`` as given, or the shipped default for ``volume`` when it is None."""
    if model is not None:
        return model
    from ..models import resolve_model

    return resolve_model(None, volume)


def one_or_three(values: float | Sequence[float] | None) -> float | list[float] | None:
    """A CLI's ``nargs='+'`` list as :func:`mrisr.infer.upscale` takes it: one value, three, or None."""
    if values is None or isinstance(values, (int, float)):
        return values
    values = [float(v) for v in values]
    return values[0] if len(values) == 1 else values


def volume_name(path: str | os.PathLike[str]) -> str:
    """A node name for an input (Slicer scenes): its file name without the image suffixes."""
    return strip_ending(Path(path).name, (*SCAN_ENDINGS, *ARCHIVE_ENDINGS)) or "volume"


def _sources(volume: Any, input: Any, labels: Mapping[str, str] | None) -> list[dict[str, str]]:
    """``[{path, sha256}]`` of the files the volume was read from; ``labels`` renames paths."""
    default = [str(p) for p in input] if isinstance(input, (list, tuple)) else [str(input)]
    sources = []
    for p in (Path(s) for s in volume.meta.get("source_paths", default)):
        if p.exists():
            label = labels.get(str(p), str(p)) if labels else str(p)
            sources.append({"path": label, "sha256": sha256_file(p)})
    return sources


def check_outputs(
    input: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    force: bool = False,
) -> bool:
    """Refuse, in milliseconds and before torch is imported, outputs :func:`upscale_file` could not write.

    Checks the output and its sidecar (see :func:`mrisr.io.atomic.check_writable`: exists
    without ``force``, an input, a protected folder, read-only or unwritable), and that a
    Slicer scene's path ends in ``.mrb``.

    Returns:
        Whether the output is a Slicer scene (``.mrb``).

    Raises:
        OutputError: one line naming the output, the problem and the fix.
    """
    out = Path(output)
    mrb = fmt == "mrb" or (fmt is None and out.suffix.lower() == SCENE_ENDING)
    if mrb and out.suffix.lower() != SCENE_ENDING:
        raise OutputError(f"--format mrb needs a path ending in .mrb, got {out.name!r}", out,
                          "name the output <scene>.mrb")
    inputs = [input] if isinstance(input, (str, os.PathLike)) else list(input)
    # a path without an image ending is a DICOM series folder (the only folder output)
    series = fmt == "dicom" or (fmt is None and not mrb and not out.name.lower().endswith(WRITE_FILE_ENDINGS))
    check_writable(out, force, inputs, kind="series" if series else "file")
    check_writable(sidecar_path(out), force, inputs, kind="file")
    return mrb


def upscale_file(
    input: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    model: str | os.PathLike[str] | LoadedModel | None = None,
    spacing: float | Sequence[float] | None = None,
    scale: float | Sequence[float] | None = None,
    fmt: str | None = None,
    device: str = "auto",
    force: bool = False,
    series: str | None = None,
    progress: bool = False,
    precision: str = "auto",
    input_label: str | None = None,
    source_labels: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Super-resolve one scan into ``output`` and write its JSON sidecar beside it.

    Args:
        input: anything :func:`mrisr.io.load` reads (a file, a DICOM folder, archive or list of files).
        output: the output file, a folder for a DICOM series, or a ``.mrb`` Slicer scene.
        model: a checkpoint path or shipped name (loaded and cached per process), a
            :class:`LoadedModel`, or None for the shipped default for the input's voxel spacing.
        spacing: target spacing in mm (one value or one per voxel axis); not with ``scale``.
        scale: upsampling factor per voxel axis (one or three).
        fmt: ``nifti``, ``nrrd``, ``mha``, ``dicom`` or ``mrb``; default: a derived DICOM series
            for DICOM input written to a path without an image extension, else by extension.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        force: replace existing outputs (never an input).
        series: the DICOM series id when the input holds several.
        progress: a tqdm bar on stderr over the planes or windows (see :func:`mrisr.infer.upscale`).
        precision: ``auto``, ``float32`` or ``bfloat16`` (see :func:`mrisr.infer.upscale`).
        input_label: how the sidecar names the input (default: ``input`` as given).
        source_labels: source file path -> the name the sidecar records for it (a batch
            names extracted archive members by their place in the archive).
        extra: more top-level sidecar fields (a batch's item key, BIDS ``Sources``).

    Returns:
        The sidecar's content: ``input`` (path, shape, spacing_mm, sources, and for a DICOM
        stack ``slice_grid``: the fitted slice spacing and largest position residual),
        ``output`` (path, format, shape, spacing_mm), ``model``, ``upscale`` (what ran:
        ``ran``, ``identity_grid``, ``clipped_below_zero``...), ``device``, ``seconds`` (load,
        upscale, write) and ``extra``'s fields.

    Raises:
        OutputError: before any work: an output exists without ``force``, is an input, or
            cannot be written (read-only or missing permissions); a bad format for the path.
        InputError, GeometryError: an unreadable input, a bad model, spacing or device.
    """
    import torch

    from ..device import resolve_device

    out = Path(output)
    mrb = check_outputs(input, out, fmt=fmt, force=force)  # before any work, not after it
    dev = str(resolve_device(device))
    label = input_label if input_label is not None else (
        str(input) if isinstance(input, (str, os.PathLike)) else str(Path(os.fspath(input[0])).parent))
    start = time.perf_counter()
    volume = load(input, series=series)
    if mrb and volume.n_channels != 1:
        raise InputError(f"has {volume.n_channels} volumes; a Slicer scene holds scalar volumes", label,
                         "upscale to NIfTI or NRRD instead of --format mrb")
    loaded = time.perf_counter()
    from ..models.loaded import LoadedModel

    if isinstance(model, LoadedModel):
        chosen = model
    else:
        chosen = cached_model(_resolve_spec(model, volume), dev)
    dicom_in = volume.meta.get("source_format") == "dicom"
    if fmt is None and dicom_in and not out.name.lower().endswith(WRITE_FILE_ENDINGS):
        fmt = "dicom"  # DICOM in, derived DICOM series out
    from .predict import upscale

    # the LoadedModel, not its bare network: the card (e.g. the 3D training patch size) decides how it runs
    result = upscale(volume, chosen, spacing=one_or_three(spacing), scale=one_or_three(scale), device=dev,
                     progress=progress, precision=precision)
    computed = time.perf_counter()
    result = result.replace(meta={**result.meta, "derivation": "mrisr super-resolution"})
    if mrb:
        from ..export import write_mrb

        fmt = "mrb"
        stem = volume_name(label)
        # input in the background, result on top; no difference: the two are on different grids
        written = write_mrb(out, {stem: volume, f"{stem}_sr": result}, force=force)
    else:
        written = save(result, out, format=fmt, force=force)
    done = time.perf_counter()
    from ..models.card import is_perceptual

    card = chosen.card
    record = result.meta.get("upscale", {})
    summary: dict[str, Any] = {
        "mrisr_version": __version__,
        "command": "upscale",
        "input": {"path": label, "shape": list(volume.shape), "spacing_mm": [float(x) for x in volume.spacing],
                  "sources": _sources(volume, input, source_labels),
                  **({"slice_grid": volume.meta["slice_grid"]} if volume.meta.get("slice_grid") else {})},
        "output": {"path": str(written), "format": fmt or "by extension", "shape": list(result.shape),
                   "spacing_mm": [float(x) for x in result.spacing]},
        "model": {"path": chosen.spec, "name": card.get("architecture", {}).get("name"),
                  "sha256": card.get("weights", {}).get("sha256"),
                  "config": card.get("architecture", {}).get("config"), "perceptual": is_perceptual(card)},
        "target_spacing_mm": [float(x) for x in result.spacing],
        "upscale": {k: record[k] for k in _RECORDED if k in record},
        "device": dev,
        "torch_version": torch.__version__,
        "seconds": {"load": round(loaded - start, 3), "upscale": round(computed - loaded, 3),
                    "write": round(done - computed, 3)},
        **(dict(extra) if extra else {}),
    }
    write_sidecar(out, summary, force=force)
    return summary
