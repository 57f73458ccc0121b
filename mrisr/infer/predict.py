"""``upscale(volume, model) -> Volume``: a trained network applied to a whole volume.

What happens, per channel (a 4D series goes volume by volume):

1. the target grid (:func:`~mrisr.infer.grid.target_grid`) keeps the field of view; the
   coarse axis is the one that grows most (:func:`~mrisr.infer.grid.coarse_axis`);
2. the channel is put on it with :func:`mrisr.preprocess.pre_upsample` and divided by
   :func:`mrisr.preprocess.intensity_scale` of that pre-upsampled image, exactly as
   :func:`mrisr.train.data.make_pair` builds training inputs;
3. the network runs (below; :mod:`mrisr.infer.runner`, the same runner that training
   validation and model shipping score), and its output is multiplied back by the same scale.

Decisions:

- **2D models** see the planes that contain the coarse axis, laid out as in training
  (``(h, w)`` = (the partner axis, the coarse axis)), batched along the third axis. Both
  plane families that contain the coarse axis are run and averaged (``fuse_orthogonal``);
  without fusion only the family whose partner is the lowest other axis runs. Axes with one
  voxel are never partners. Planes are whole unless ``roi_size``
  (2 values) asks for 2D sliding windows.
- **3D models** run through MONAI's :class:`~monai.inferers.SlidingWindowInferer` with
  Gaussian blending, on the volume permuted to the training patch layout (in-plane axes in
  voxel order, then the coarse axis). ``roi_size`` (patch layout) defaults to the model
  card's training patch size when the card has one, else 64^3, and is clipped to the volume
  (no zero padding beyond it). The windows run on the compute device (``sw_device``); the
  output is assembled there when ``3 x`` its size fits in the free CUDA memory
  (``torch.cuda.mem_get_info``), else on the CPU. AMP autocast (float16) is on under CUDA.
- **Halo.** Gaussian blending still gives a little weight to each window's border, where a
  window lacks context. ``halo=h`` gives every window ``h`` voxels of real context on each
  side (read from the volume, clipped at its faces) and crops them off the output, so that
  for a network whose receptive radius is at most ``h`` (VDSR: ``depth`` voxels) the
  sliding-window result equals one full-volume forward pass. Default 0 (plain MONAI
  windows: cheaper; the border mismatch is small and blended away).
- **Batch size** (``sw_batch_size``: windows, or planes in 2D) unless given: a budget of half
  the free CUDA memory, or on the CPU a quarter of the available memory capped at 1 GiB for
  windows and at 32 MiB (cache-sized: measured faster per plane) for planes, divided by
  ``3 x voxels x width x bytes`` per item (``width`` = the network's ``features``, 64 when
  unknown; 2 bytes under AMP, else 4), clipped to 1..16 windows or 1..64 planes.
- **Identity grid.** When the target grid equals the input grid (nothing to upscale, e.g. a
  single 2D image at its own spacing) the network still runs as a same-grid restoration
  filter, so the result does not depend on whether a resize happened; but never silently:
  a warning says so, and the ``upscale`` record holds ``identity_grid: true`` and ``ran``.
- **Magnitude images stay non-negative.** When every input value is >= 0 (magnitude MRI),
  the output is clipped at 0: cubic pre-upsampling and the network's residual overshoot at
  the tissue-to-air edge, and a negative magnitude is never real (``clipped_below_zero`` in
  the record counts the voxels). Inputs with negative values (phase, difference images)
  are left as they are.
- **Precision** (``precision``): on CPUs with fast bf16 (``auto``), the network's convolutions run
  under bfloat16 autocast with channels-last memory, 2-3x faster; pre-upsampling, the residual sum
  and all post-processing stay float32 (:mod:`mrisr.infer.precision`).
- **Progress** (``progress=True``): one tqdm bar on stderr over the planes (2D models, all
  plane families and channels) or the sliding windows (3D), with rate and ETA.
- **Normalisation** is per channel (the scale of that channel's pre-upsampled image), so a
  4D series gives exactly the per-volume results.
- The output Volume is float32 on the target grid (affine from ``target_grid``, exact),
  ``meta`` = the source's (``source_paths`` kept, so a writer refuses to overwrite the input)
  plus ``dtype: float32``, the new ``range`` and an ``upscale`` record.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..device import resolve_device
from ..errors import InputError, MrisrError
from ..models import resolve_model
from ..models.card import PERCEPTUAL_NOTE, is_perceptual
from ..models.loaded import LoadedModel, load_model
from ..preprocess import clip_like_magnitude, denormalize, normalize, pre_upsample
from ..volume import Volume
from ..volume import spacing as voxel_spacing
from .grid import coarse_axis, target_grid, upsampled_axes
from .runner import NetworkRun, plan_run, run_network

__all__ = ["load_model", "upscale"]

def _model_info(net: nn.Module, card: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    from ..nets import network_name

    try:
        name = card.get("architecture", {}).get("name") or network_name(net)
    except MrisrError:
        name = type(net).__name__
    return {"name": name, "shipped_name": card.get("name"), "config": dict(config),
            "sha256": card.get("weights", {}).get("sha256"),
            "mrisr_version": card.get("mrisr_version"), "perceptual": is_perceptual(card)}


# --------------------------------------------------------------------------- upscale


def _post_note(run: NetworkRun) -> str:
    """What a post-upsampling network did, for the record's ``ran``."""
    if run.upsampling != "post":
        return ""
    factors = " x ".join(map(str, run.factors))
    note = f" (post-upsampling: the network grew the acquired grid {factors}"
    if run.resampled_axes:
        note += (f", then one cubic resampling step onto the target grid along voxel axes {run.resampled_axes} "
                 f"({' x '.join(map(str, run.network_shape))} -> {' x '.join(map(str, run.out_shape))})")
    return note + ")"


def _as_tensor(array: Any) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().to("cpu", torch.float32)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def upscale(
    volume: Volume,
    model: LoadedModel | nn.Module | str | os.PathLike[str] | None = None,
    *,
    spacing: float | Sequence[float] | None = None,
    scale: float | Sequence[float] | None = None,
    device: str | torch.device = "auto",
    roi_size: Sequence[int] | int | None = None,
    sw_batch_size: int | None = None,
    overlap: float = 0.25,
    fuse_orthogonal: bool = True,
    halo: int = 0,
    amp: bool = True,
    precision: str = "auto",
    progress: bool = False,
) -> Volume:
    """Super-resolve ``volume`` with ``model`` onto a field-of-view-preserving grid.

    Args:
        volume: the input, ``(C, X, Y, Z)``; any orientation, oblique included.
        model: a :class:`~mrisr.models.loaded.LoadedModel` (its card decides the 3D window),
            a network, a checkpoint path (card, weights, folder or run folder) or a shipped
            model's name (see :func:`mrisr.models.loaded.load_model`); ``None``: the shipped
            default for the input's voxel spacing (:func:`mrisr.models.resolve_model`).
        spacing: target spacing, mm (one value or one per voxel axis).
        scale: upsampling factor per voxel axis (one or three); not with ``spacing``.
            Neither: isotropic at the finest input spacing.
        device: ``auto`` (CUDA when there is one), ``cpu``, ``cuda`` or ``cuda:N``.
        roi_size: window size in the training patch layout (coarse axis last); 3D default:
            the card's training patch size, else 64^3; 2D default: whole planes.
        sw_batch_size: windows (3D) or planes (2D) per forward pass; default from free memory.
        overlap: sliding-window overlap fraction, in ``[0, 1)``.
        fuse_orthogonal: 2D models: average the two plane families that contain the coarse axis.
        halo: voxels of extra context per window side (see the module docstring).
        amp: float16 autocast on CUDA (ignored on the CPU).
        precision: the CPU's network precision: ``auto`` (bfloat16 autocast where this CPU runs it
            natively, else float32; see :mod:`mrisr.infer.precision`), ``float32`` or
            ``bfloat16``; recorded as ``precision``.
        progress: a tqdm bar on stderr over the planes (2D) or windows (3D), with ETA.

    Returns:
        A float32 Volume on the target grid with the source's meta plus an ``upscale`` record;
        clipped at 0 when the input has no negative value (magnitude images).

    Warns:
        UserWarning: the target grid equals the input grid (nothing to upscale).

    Raises:
        InputError: bad spacing/scale (see :func:`~mrisr.infer.grid.target_grid`), an unknown
            model or device, no model given and the default not shipped, a model that is not
            2D/3D or takes more than one channel, a 3D model on a single image, a 2D model asked
            to upscale a single image in-plane along more than one axis.
    """
    start = time.perf_counter()
    if not isinstance(volume, Volume):
        raise InputError(f"volume must be a mrisr Volume, got {type(volume).__name__}", "volume",
                         "read it with mrisr.load(path)")
    hr_affine, hr_shape = target_grid(volume.affine, volume.shape, spacing=spacing, scale=scale)
    lr_shape = volume.shape
    axis = coarse_axis(volume.affine, lr_shape, hr_affine, hr_shape)
    dev = resolve_device(device)
    loaded = load_model(resolve_model(model, volume), dev)
    net, card, config = loaded.net, loaded.card, loaded.config
    run = plan_run(loaded, hr_shape, axis, lr_shape=lr_shape, roi_size=roi_size, sw_batch_size=sw_batch_size,
                   overlap=overlap, fuse_orthogonal=fuse_orthogonal, halo=halo, amp=amp, precision=precision)
    dims = run.dims
    singles = [a for a in range(3) if lr_shape[a] == 1]
    if dims == 3 and singles:
        raise InputError(f"a 3D model needs a 3D volume; this one has a single voxel along "
                         f"{', '.join('XYZ'[a] for a in singles)} (shape {list(lr_shape)})", "volume",
                         "use a 2D model for single images")
    grown = upsampled_axes(volume.affine, lr_shape, hr_affine, hr_shape)
    in_plane_pass = run.upsampling == "post" and dims == 2 and {run.axis, *run.partners} >= set(grown)
    if dims == 2 and singles and len(grown) > 1 and not in_plane_pass:
        raise InputError(f"a 2D model upscales through slices along one axis; this single image is asked to grow "
                         f"in-plane along {', '.join('XYZ'[a] for a in grown)}", "spacing/scale",
                         "give a spacing or scale that upsamples one axis only")

    identity = tuple(hr_shape) == tuple(lr_shape) and np.allclose(hr_affine, volume.affine, rtol=0, atol=1e-6)
    if identity:
        warnings.warn(
            f"nothing to upscale: the target grid equals the input grid ({' x '.join(map(str, lr_shape))} at "
            f"{' x '.join(f'{v:.3g}' for v in voxel_spacing(volume.affine))} mm); the model runs as a same-grid "
            "restoration filter (give --spacing or --scale to upsample)",
            stacklevel=2,
        )
    from tqdm.auto import tqdm

    total = run.items() * volume.n_channels if progress else 0
    bar = tqdm(total=total or None, desc="upscale", unit=run.unit, disable=not progress, dynamic_ncols=True)
    source = _as_tensor(volume.array)
    non_negative = bool(source.numel()) and float(source.min()) >= 0.0
    clipped = 0
    out = torch.empty((volume.n_channels, *hr_shape), dtype=torch.float32)
    for c in range(volume.n_channels):
        # one name per stage, each dropped once used: peak memory stays a few target-grid copies
        if run.upsampling == "post":  # the network takes the acquired grid and grows it itself
            x, s = normalize(source[c])
        else:
            x, s = normalize(pre_upsample(source[c : c + 1], volume.affine, hr_affine, hr_shape)[0])
        y = run_network(run, x, bar)
        del x
        y, below = clip_like_magnitude(denormalize(y, s), source)
        clipped += below
        out[c] = y
        del y
    bar.close()

    seconds = time.perf_counter() - start
    record = {
        "model": _model_info(net, card, config),
        "spatial_dims": dims,
        "input_shape": list(lr_shape),
        "input_spacing_mm": [float(v) for v in voxel_spacing(volume.affine)],
        "target_shape": list(hr_shape),
        "target_spacing_mm": [float(v) for v in voxel_spacing(hr_affine)],
        "coarse_axis": int(axis),
        "upsampled_axes": grown,
        "fused_orthogonal": bool(dims == 2 and len(run.partners) > 1),
        "upsampling": run.upsampling,
        "network_factors": list(run.factors) if run.upsampling == "post" else None,
        "network_level": run.level,
        "network_grid": list(run.network_shape) if run.upsampling == "post" else None,
        "resampled_axes": run.resampled_axes if run.upsampling == "post" else [],
        "roi_size": list(run.roi) if run.roi is not None else None,
        "sw_batch_size": run.batch,
        "overlap": float(overlap),
        "halo": int(halo),
        "identity_grid": bool(identity),
        "ran": ("same-grid restoration (the target grid equals the input grid: nothing upscaled)" if identity
                else f"{dims}D super-resolution along voxel axes {grown}" + _post_note(run)),
        "perceptual": is_perceptual(card),
        **({"perceptual_note": PERCEPTUAL_NOTE} if is_perceptual(card) else {}),
        "non_negative_input": non_negative,
        "clipped_below_zero": clipped,
        "device": str(dev),
        "amp": run.amp,
        "precision": run.precision,
        "seconds": round(seconds, 3),
    }
    array = out.numpy()
    meta = {**volume.meta, "dtype": "float32", "range": [float(array.min()), float(array.max())] if array.size
            else None, "upscale": record}
    return Volume(array, hr_affine, meta)
