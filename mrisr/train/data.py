"""Training data: high-resolution volumes -> simulated (input, target) pairs and patches.

A pair is made the way inference will see data: the high-resolution (HR) volume is
degraded by one simulated acquisition (:func:`mrisr.kspace.degrade`), the low-resolution
(LR) result is put back on the HR grid with :func:`mrisr.preprocess.pre_upsample`, and
both input and target are divided by ONE intensity scale computed from the input alone
(:func:`mrisr.preprocess.normalize`): inference has only the input.

Decisions:

- **Orientation.** Volumes keep their native voxel order (no reorientation: no copy, and
  :func:`~mrisr.kspace.degrade` maps the protocol's anatomical slice direction to the
  closest voxel axis itself). The degraded (slice) axis is read per volume from
  ``meta["degradation"]["slice_axis"]`` and patches are laid out relative to it, so
  volumes stored axially, sagittally or obliquely give the same kind of patch.
- **Patch layout.** The slice axis is always the LAST patch axis. 2D: a plane that
  contains the slice axis, ``(1, h, w)`` with ``h`` along an in-plane axis drawn at random
  and ``w`` along the slice axis. 3D: ``(1, d, h, w)`` with ``d, h`` along the two in-plane
  axes in random order and ``w`` along the slice axis. A 3D model is thus applied to a
  volume permuted with :func:`slice_last` (2D: to the planes that contain the slice axis).
- **Small volumes** are zero-padded (symmetrically, after degradation, input and target
  alike) up to the patch size: zero is background in MRI, and the residual to learn there
  is zero. Padding the HR volume before degradation would change the simulated physics.
- **Channels.** A multi-channel volume (a 4D series) is degraded as one acquisition and
  normalised with one scale; each patch takes one channel drawn at random.
- **Randomness** comes only from ``torch.Generator`` objects seeded from
  ``(seed, epoch, rank, worker id)``; the global random state is never used.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import InputError, MrisrError
from ..io import list_series, load
from ..io.formats import VOLUME_ENDINGS
from ..kspace.degrade import acquisition_axes, degrade
from ..preprocess import foreground_mask as preprocess_foreground
from ..preprocess import normalize, percentile_99, pre_upsample, resample_to_shape
from ..protocol import Acquisition, AcquisitionParams, Protocol
from ..volume import Volume, crop, spacing

__all__ = [
    "load_training_volumes",
    "volume_name",
    "make_pair",
    "foreground_mask",
    "slice_last",
    "strip_background",
    "check_patch_dims",
    "stream_generator",
    "PatchPairs",
    "validation_pairs",
]


PathLikeArg = str | PathLike[str]


# --------------------------------------------------------------------------- loading


def _has_volume_suffix(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_ENDINGS)  # a folder without any is read as DICOM


def _expand(path: Path) -> list[tuple[str, Any]]:
    """What to load for one path: ``[(name, load argument or (folder, series id))]``."""
    if not path.is_dir():
        return [(str(path), path)]
    files = sorted(p for p in path.rglob("*") if p.is_file() and _has_volume_suffix(p))
    if files:
        return [(str(p), p) for p in files]
    series = list_series(path)  # a DICOM folder: one volume per series
    if len(series) <= 1:
        return [(str(path), path)]
    return [(f"{path}#{s.id}", (path, s.id)) for s in series]


def _warn_skip(name: str, exc: BaseException) -> None:
    reason = exc.one_line() if isinstance(exc, MrisrError) else f"{type(exc).__name__}: {exc}"
    warnings.warn(f"skipping training volume {name}: {reason}", stacklevel=3)


def _load_items(items: Sequence[PathLikeArg | Volume]) -> list[Volume]:
    """Volumes as given, paths read (unreadable entries skipped with a warning), in order."""
    volumes: list[Volume] = []
    for item in items:
        if isinstance(item, Volume):
            volumes.append(item)
            continue
        path = Path(item)
        try:
            entries = _expand(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is skipped, named, with its reason
            _warn_skip(str(path), exc)
            continue
        for name, what in entries:
            try:
                volume = load(what[0], series=what[1]) if isinstance(what, tuple) else load(what)
            except Exception as exc:  # noqa: BLE001
                _warn_skip(name, exc)
                continue
            volumes.append(volume.replace(meta={**volume.meta, "training_source": name}))
    if not volumes:
        raise InputError(
            f"no readable training volume among {len(items)} path{'s' if len(items) != 1 else ''}",
            "data",
            "fix or remove the files named in the warnings above, or point at NIfTI/NRRD/MHA/DICOM volumes",
        )
    return volumes


def _items(data: Any) -> list[Any]:
    items = [data] if isinstance(data, (Volume, str, PathLike)) else list(data)
    if not items:
        raise InputError("empty list of training volumes", "data", "give at least one file or folder of HR volumes")
    return items


def load_training_volumes(paths: Sequence[PathLikeArg]) -> list[Volume]:
    """Read every training volume among ``paths`` (files or folders, any format ``mrisr.load`` reads).

    A folder stands for the NIfTI/NRRD/MetaImage files under it (searched recursively) or,
    when it holds none, for its DICOM series (one volume each). An unreadable entry is
    skipped with a warning that names it and the reason. Volumes keep their native
    orientation; ``meta["training_source"]`` names where each came from.

    Raises:
        InputError: ``paths`` is empty, or nothing readable is left.
    """
    return _load_items(_items(paths))


def _as_volumes(data: Sequence[Volume | PathLikeArg] | Volume) -> list[Volume]:
    """Volumes given directly, or read from paths (both may be mixed)."""
    return _load_items(_items(data))


def volume_name(volume: Volume, index: int) -> str:
    """A readable name: where the volume was read from, else ``volume <index>``."""
    if volume.meta.get("training_source"):
        return str(volume.meta["training_source"])
    sources = volume.meta.get("source_paths") or []
    return str(sources[0]) if sources else f"volume {index}"


# --------------------------------------------------------------------------- pairs


def _torch(array: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array) if isinstance(array, np.ndarray) else array).to(torch.float32)


def _slice_geometry(volume: Volume, params: AcquisitionParams, slice_axis: int) -> tuple[float, float]:
    """(thickness, spacing) of the simulated slices, mm."""
    if params.slice_scale is not None:
        step = float(spacing(volume.affine)[slice_axis]) * params.slice_scale
        return step, step
    assert params.thickness_mm is not None and params.slice_spacing_mm is not None
    return float(params.thickness_mm), float(params.slice_spacing_mm)


def grown_axes(volume: Volume, params: AcquisitionParams, layout_factors: Sequence[int]) -> list[int]:
    """The voxel axes a post-upsampling network with ``layout_factors`` (per patch axis, grown axes
    last) grows for this acquisition, in voxel order: the slice axis for one grown axis, the two
    in-plane axes (phase encode and readout) for two, all three for three."""
    k = sum(int(f) > 1 for f in layout_factors)
    axes = acquisition_axes(np.asarray(volume.affine), params.orientation, params.phase_encode)
    if k == 1:
        return [axes.slice]
    if k == 2:
        return sorted([axes.phase, axes.read])
    return [0, 1, 2]


def make_pair(
    volume: Volume, params: AcquisitionParams, generator: torch.Generator,
    layout_factors: Sequence[int] | None = None, *, training: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """One simulated training pair.

    Pre-upsampling networks (``layout_factors`` None): ``input = pre_upsample(degrade(volume).array) /
    scale`` and ``target = volume.array / scale`` on the HR grid, ``scale`` from
    :func:`~mrisr.preprocess.normalize` of the (unscaled) input.

    Post-upsampling networks (``layout_factors``: their integer factors per patch axis, grown
    axes last; see :func:`grown_axes` for which voxel axes those are): the HR volume is first cropped
    (centred) to a multiple of the factor along each grown axis, so that the acquired grid times the
    factor is the HR grid itself whenever the slice step is the factor times the HR spacing (a
    protocol with a fixed ``scale``); ``input = degrade(volume).array / scale`` stays on the
    acquired grid, ``scale`` from that input, and ``target`` is the HR volume on the acquired grid
    times the factors (:func:`~mrisr.preprocess.resample_to_shape`, identity in the exact case).
    With ``training=False`` (validation) nothing is cropped or resampled: the target is the whole HR
    volume, where ``upscale``'s resampling step puts the network's result, as users get it.

    Returns:
        ``(input, target, info)``: float32 ``(C, X, Y, Z)`` tensors, and ``info`` with ``scale``,
        ``params``, ``slice_axis``, ``slice_thickness_mm``, ``slice_spacing_mm``, ``lr_shape``,
        ``factors`` (per voxel axis; all 1 for pre-upsampling), ``grown_axes`` and degrade's
        ``degradation`` record.

    Raises:
        InputError: a post-upsampling pair whose acquisition shrinks an axis the network does not grow.
    """
    factors = [1, 1, 1]
    grown: list[int] = []
    if layout_factors is not None:
        grown = grown_axes(volume, params, layout_factors)
        for a, f in zip(grown, [int(f) for f in layout_factors][-len(grown):], strict=True):
            factors[a] = f
        keep = [n - n % f if n >= f else n for n, f in zip(volume.shape, factors, strict=True)]
        if training and list(keep) != list(volume.shape):
            low = [(n - k) // 2 for n, k in zip(volume.shape, keep, strict=True)]
            volume = crop(volume, low, [lo + k for lo, k in zip(low, keep, strict=True)])
    lr = degrade(volume, params, generator)
    record = lr.meta["degradation"]
    if layout_factors is None:
        upsampled = pre_upsample(_torch(lr.array), lr.affine, volume.affine, volume.shape)
        model_input, scale = normalize(upsampled.to(torch.float32))
        target = _torch(volume.array) / scale
    else:
        shrunk = [a for a in range(3) if lr.shape[a] != volume.shape[a] and a not in grown]
        if shrunk:
            raise InputError(
                f"the acquisition shrinks voxel axes {shrunk} ({list(volume.shape)} -> {list(lr.shape)}), which "
                f"the post-upsampling network (factors {list(layout_factors)}) does not grow",
                "protocol", "give in_plane.reconstruction: zerofilled, or a network that grows those axes too")
        model_input, scale = normalize(_torch(lr.array))
        network_grid = [n * f for n, f in zip(lr.shape, factors, strict=True)] if training else volume.shape
        target = resample_to_shape(_torch(volume.array), network_grid) / scale
    slice_axis = int(record["slice_axis"])
    thickness, step = _slice_geometry(volume, params, slice_axis)
    info = {
        "scale": float(scale),
        "params": params,
        "slice_axis": slice_axis,
        "slice_thickness_mm": thickness,
        "slice_spacing_mm": step,
        "lr_shape": lr.shape,
        "factors": factors,
        "grown_axes": grown or [slice_axis],
        "degradation": record,
    }
    return model_input.contiguous(), target.contiguous(), info


def foreground_mask(image: torch.Tensor) -> torch.Tensor:
    """Spatial voxels where any channel of ``(C, X, Y, Z)`` exceeds 10% of the image's 99th
    percentile (the rule of :func:`~mrisr.preprocess.intensity_scale`); bool ``(X, Y, Z)``."""
    p99 = percentile_99(image) if image.numel() else 0.0
    if p99 <= 0:
        return torch.zeros(image.shape[1:], dtype=torch.bool)
    return preprocess_foreground(image, p99=p99).any(0)


#: Range of the tissue threshold of :func:`strip_background`, as fractions of the 99th percentile.
STRIP_THRESHOLD = (0.15, 0.35)
#: Range of the opening radius of :func:`strip_background`, mm.
STRIP_RADIUS_MM = (3.0, 6.0)


def strip_background(volume: Volume, generator: torch.Generator) -> Volume:
    """``volume`` zeroed outside a random tissue mask: the look of skull-stripped data.

    Skull-stripped volumes (templates, research pipelines) end in a sharp step from tissue to
    exactly zero that heads with skull never show; a model trained only on those rings there.
    The mask is a rough morphological brain extraction with random parameters, on a 2 mm grid
    (depending on the draw it keeps the brain, the head, or mainly white matter):
    tissue = smoothed channel maximum above a threshold (:data:`STRIP_THRESHOLD` x its 99th
    percentile); eroded by a ball (radius from :data:`STRIP_RADIUS_MM`) to cut the brain off
    the scalp; the largest connected part; dilated back inside the tissue; holes filled.
    Voxels inside the mask are unchanged. scipy.ndimage does the morphology (MONAI has no 3D
    binary opening with connected components on plain arrays).
    """
    from scipy import ndimage

    image = np.asarray(volume.array, dtype=np.float32)
    step = [max(1, round(2.0 / s)) for s in spacing(volume.affine)]  # about 2 mm voxels
    coarse = image.max(axis=0)[:: step[0], :: step[1], :: step[2]]
    mm = [s * k for s, k in zip(spacing(volume.affine), step, strict=True)]
    draws = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
    fraction = STRIP_THRESHOLD[0] + (STRIP_THRESHOLD[1] - STRIP_THRESHOLD[0]) * draws[0]
    radius = STRIP_RADIUS_MM[0] + (STRIP_RADIUS_MM[1] - STRIP_RADIUS_MM[0]) * draws[1]
    smooth = ndimage.gaussian_filter(coarse, sigma=[1.0 / m for m in mm])
    tissue = smooth > fraction * float(np.percentile(smooth, 99))
    grid = np.meshgrid(*[np.arange(-int(radius / m), int(radius / m) + 1) * m for m in mm], indexing="ij")
    ball = sum(g**2 for g in grid) <= radius**2
    core = ndimage.binary_erosion(tissue, structure=ball)
    labels, count = ndimage.label(core)
    if count == 0:
        return volume
    largest = np.argmax(np.bincount(labels.reshape(-1))[1:]) + 1
    mask = ndimage.binary_fill_holes(ndimage.binary_dilation(labels == largest, structure=ball) & tissue)
    for axis, k in enumerate(step):  # back to the full grid (nearest neighbour)
        mask = np.repeat(mask, k, axis=axis)
    mask = mask[: image.shape[1], : image.shape[2], : image.shape[3]]
    return volume.replace(array=image * mask[None])


def slice_last(image: torch.Tensor, slice_axis: int) -> torch.Tensor:
    """``(C, X, Y, Z)`` permuted so that the slice axis is last, the in-plane axes in voxel
    order first: the layout of 3D training patches (undo with ``.permute`` of the inverse)."""
    rest = [a for a in range(3) if a != slice_axis]
    return image.permute(0, rest[0] + 1, rest[1] + 1, slice_axis + 1)


def check_patch_dims(protocol: Protocol) -> None:
    """``train.patch_size`` has one value per ``network.spatial_dims``; InputError otherwise."""
    sizes, dims = tuple(protocol.train.patch_size), int(protocol.network.spatial_dims)
    if len(sizes) != dims:
        raise InputError(
            f"train.patch_size {list(sizes)} has {len(sizes)} values but network.spatial_dims is {dims}",
            protocol.source or protocol.name,
            f"give {dims} patch sizes in train.patch_size, or set network.spatial_dims to {len(sizes)}",
        )
    if dims not in (2, 3):
        raise InputError(f"network.spatial_dims is {dims}", protocol.source or protocol.name, "use 2 or 3")


def _check_volumes(volumes: Sequence[Volume], acquisition: Acquisition, *, nominal: bool) -> None:
    """Refuse, before any worker starts, volumes that the acquisition cannot degrade."""
    s = acquisition.slice
    for i, volume in enumerate(volumes):
        name = volume_name(volume, i)
        try:
            axes = acquisition_axes(np.asarray(volume.affine), acquisition.orientation, acquisition.phase_encode)
        except InputError as exc:
            raise InputError(exc.problem, name, exc.fix) from None
        if volume.shape[axes.slice] < 2:
            raise InputError(
                f"one voxel along the slice axis ({'XYZ'[axes.slice]}) of a {acquisition.orientation} acquisition",
                name,
                "train on 3D volumes; a single image has no slice axis to degrade",
            )
        if s.thickness_mm is None:
            continue
        if nominal:
            thinnest = s.thickness_mm.nominal + (s.gap_mm.nominal if s.gap_mm else 0.0)
        else:
            thinnest = s.thickness_mm.range[0] + (s.gap_mm.range[0] if s.gap_mm else 0.0)
        own = float(spacing(volume.affine)[axes.slice])
        if thinnest < own * (1 - 1e-6):
            raise InputError(
                f"slice spacing down to {thinnest:g} mm is finer than the volume's {own:g} mm along its slice axis",
                name,
                "train on finer volumes, or use a protocol with thicker slices",
            )


# --------------------------------------------------------------------------- the stream


def stream_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, *keys)`` through numpy's SeedSequence (well mixed,
    so nearby seeds or worker ids give unrelated streams)."""
    state = np.random.SeedSequence([int(seed), *(int(k) for k in keys)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def _randint(n: int, generator: torch.Generator) -> int:
    return int(torch.randint(n, (), generator=generator))


def _pad(image: torch.Tensor, low: Sequence[int], high: Sequence[int]) -> torch.Tensor:
    """Zero-pad ``(C, X, Y, Z)`` by ``low`` / ``high`` voxels per axis."""
    if not any(low) and not any(high):
        return image
    pads: list[int] = []
    for lo, hi in zip(reversed(list(low)), reversed(list(high)), strict=True):
        pads += [int(lo), int(hi)]
    return torch.nn.functional.pad(image, pads)


def _pad_to(image: torch.Tensor, minimum: Sequence[int]) -> tuple[torch.Tensor, list[int], list[int]]:
    """Zero-pad ``(C, X, Y, Z)`` symmetrically to at least ``minimum`` per axis; (padded, low, high pads)."""
    low = [max(0, m - n) // 2 for n, m in zip(image.shape[1:], minimum, strict=True)]
    high = [max(0, m - n) - lo for n, m, lo in zip(image.shape[1:], minimum, low, strict=True)]
    return _pad(image, low, high), low, high


class _Slot:
    """One degraded volume in the pool: its pair, foreground voxels and bookkeeping. ``minimum``:
    the input's smallest size per voxel axis; the target is padded by the same voxels times the
    network's factors (post-upsampling), so the two grids stay aligned."""

    def __init__(self, index: int, model_input: torch.Tensor, target: torch.Tensor, info: dict,
                 minimum: Sequence[int]) -> None:
        self.index = index
        self.factors = [int(f) for f in info.get("factors", (1, 1, 1))]
        self.input, self.pad, high = _pad_to(model_input, minimum)
        self.target = _pad(target, [lo * f for lo, f in zip(self.pad, self.factors, strict=True)],
                           [hi * f for hi, f in zip(high, self.factors, strict=True)])
        self.shape = tuple(int(n) for n in self.input.shape[1:])
        self.foreground = foreground_mask(self.input).reshape(-1).nonzero().reshape(-1)
        self.info = info
        self.used = 0


def network_factors(protocol: Protocol) -> tuple[int, ...] | None:
    """The protocol's network's finest integer factors per patch axis (grown axes last) when it is a
    post-upsampling network, else None (the network is built once to read them)."""
    from ..nets import level_scales, network_from_block, upsampling

    net = network_from_block(protocol.network)
    return level_scales(net)[-1] if upsampling(net) == "post" else None


def _check_factors(protocol: Protocol, factors: Sequence[int] | None) -> None:
    if factors is None:
        return
    sizes = tuple(protocol.train.patch_size)
    if len(factors) != len(sizes) or any(p % f for p, f in zip(sizes, factors, strict=True)):
        raise InputError(f"train.patch_size {list(sizes)} is not a multiple of the network's factors {list(factors)}",
                         protocol.source or protocol.name,
                         "give patch sizes (high-resolution voxels) divisible by the network's scale")


class PatchPairs(IterableDataset):
    """An endless (or ``length``-long) stream of random training patches, simulated on the fly.

    Args:
        data: HR volumes, or files/folders to read with :func:`load_training_volumes`.
        protocol: ``acquisition`` (drawn anew for every degraded volume: multi-scale
            training), ``train.patch_size`` and ``network.spatial_dims``.
        pairs_per_volume: patches cut from each degraded volume before it is replaced
            by a fresh degradation (new volume, new parameters).
        seed: the stream's seed; with ``epoch``, ``rank`` and the DataLoader worker id it
            seeds a worker's generator, so every worker streams differently and reproducibly.
        foreground_bias: probability that a patch centre is a foreground voxel of the input
            (above 10% of its 99th percentile); otherwise any voxel, uniformly.
        strip_probability: share of degraded volumes made from :func:`strip_background` of the
            HR volume (brain-masked look: zero outside a smoothed threshold).
        pool_size: degraded volumes held at once; each patch comes from one of them at
            random, so consecutive patches (one batch) mix scale factors and volumes.
        length: patches per iteration over all workers of this rank (split between them);
            None: endless.
        epoch, rank: further stream keys (``set_epoch``; the process rank of a distributed run).
        factors: a post-upsampling network's integer factors per patch axis (grown axes last);
            default: read from the protocol's network (None for pre-upsampling networks). The
            patches of a post-upsampling network: ``input`` on the acquired grid (``patch_size``
            over the factors), ``target`` ``patch_size`` on the HR grid, aligned voxel for voxel.

    Yields:
        dicts with ``input`` and ``target`` (float32 ``(1, h, w)`` or ``(1, d, h, w)``, the
        slice axis last), ``scale`` (intensity scale of the pair), ``slice_axis`` (voxel axis
        of the volume), ``slice_thickness_mm``, ``center`` (int64 ``(3,)``: the drawn centre
        voxel in the input's indices (the acquired grid for post-upsampling networks); the patch
        holds it, shifted inwards at the borders) and ``volume`` (index into ``volumes``).

    Raises:
        InputError: patch size and network dimensions disagree, no volume, bad arguments,
            or a volume the acquisition cannot degrade (named).
    """

    def __init__(
        self,
        data: Sequence[Volume | PathLikeArg] | Volume,
        protocol: Protocol,
        *,
        pairs_per_volume: int = 16,
        seed: int = 0,
        foreground_bias: float = 0.8,
        strip_probability: float = 0.0,
        pool_size: int = 4,
        length: int | None = None,
        epoch: int = 0,
        rank: int = 0,
        factors: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_patch_dims(protocol)
        for key, value, low in (("pairs_per_volume", pairs_per_volume, 1), ("pool_size", pool_size, 1),
                                ("seed", seed, 0), ("epoch", epoch, 0), ("rank", rank, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InputError(f"{key} must be an integer >= {low}, got {value!r}", key, "give one")
        if length is not None and (not isinstance(length, int) or length < 0):
            raise InputError(f"length must be None or an integer >= 0, got {length!r}", "length", "give one")
        if not 0.0 <= float(foreground_bias) <= 1.0:
            raise InputError(f"foreground_bias {foreground_bias!r} is outside [0, 1]", "foreground_bias",
                             "give a probability")
        if not 0.0 <= float(strip_probability) <= 1.0:
            raise InputError(f"strip_probability {strip_probability!r} is outside [0, 1]", "strip_probability",
                             "give a probability")
        self.layout_factors = tuple(factors) if factors is not None else network_factors(protocol)
        _check_factors(protocol, self.layout_factors)
        self.volumes = _as_volumes(data)
        _check_volumes(self.volumes, protocol.acquisition, nominal=False)
        self.protocol = protocol
        self.acquisition = protocol.acquisition
        self.patch_size = tuple(int(p) for p in protocol.train.patch_size)
        self.spatial_dims = int(protocol.network.spatial_dims)
        self.pairs_per_volume = pairs_per_volume
        self.seed = seed
        self.foreground_bias = float(foreground_bias)
        self.strip_probability = float(strip_probability)
        self.pool_size = pool_size
        self.length = length
        self.epoch = epoch
        self.rank = rank

    def set_epoch(self, epoch: int) -> None:
        """Key the next iterations' streams by ``epoch`` (as DistributedSampler.set_epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("an endless PatchPairs stream has no length (give length=...)")
        return self.length

    def _minimum(self, info: dict) -> list[int]:
        """Per voxel axis, the input size a pair must have for any patch layout: the grown axes (the
        slice axis for pre-upsampling) take the last patch sizes (over the factors), the others the
        largest of the rest (1 when none is left: the plane index of a 2D in-plane network)."""
        grown = list(info["grown_axes"])
        factors = info["factors"]
        lead = self.patch_size[: len(self.patch_size) - len(grown)]
        other = max(lead) if lead else 1
        sizes = dict(zip(grown, self.patch_size[len(lead):], strict=True))
        return [sizes[a] // factors[a] if a in sizes else other for a in range(3)]

    def _new_slot(self, generator: torch.Generator, order: list[int]) -> _Slot:
        if not order:
            order.extend(torch.randperm(len(self.volumes), generator=generator).tolist())
        index = order.pop()
        volume = self.volumes[index]
        # no draw at probability 0, so streams of protocols without stripping stay as they were
        if self.strip_probability > 0 and float(torch.rand((), generator=generator)) < self.strip_probability:
            volume = strip_background(volume, generator)
        params = self.acquisition.sample(generator)
        model_input, target, info = make_pair(volume, params, generator, self.layout_factors)
        return _Slot(index, model_input, target, info, self._minimum(info))

    def _center(self, slot: _Slot, generator: torch.Generator) -> list[int]:
        draw = float(torch.rand((), generator=generator, dtype=torch.float64))
        if slot.foreground.numel() and draw < self.foreground_bias:
            flat = int(slot.foreground[_randint(slot.foreground.numel(), generator)])
            return [int(i) for i in np.unravel_index(flat, slot.shape)]
        return [_randint(n, generator) for n in slot.shape]

    def _patch(self, slot: _Slot, generator: torch.Generator) -> dict[str, Any]:
        s = slot.info["slice_axis"]
        grown = list(slot.info["grown_axes"])  # pre-upsampling: [slice axis]
        f = slot.factors
        center = self._center(slot, generator)  # on the input's grid
        others = [a for a in range(3) if a not in grown]
        if _randint(2, generator):
            others.reverse()
        axes = others[: self.spatial_dims - len(grown)] + grown  # patch axes, grown (slice) last
        channel = _randint(slot.input.shape[0], generator)
        index: list[Any] = [channel, None, None, None]
        target_index: list[Any] = [channel, None, None, None]
        for a in range(3):
            if a not in axes:  # 2D: the plane through the centre (an axis the network does not grow)
                index[a + 1] = target_index[a + 1] = center[a]
        for a, size in zip(axes, self.patch_size, strict=True):
            small = size // f[a]
            start = min(max(center[a] - small // 2, 0), slot.shape[a] - small)
            index[a + 1] = slice(start, start + small)
            target_index[a + 1] = slice(start * f[a], (start + small) * f[a])
        kept = [a for a in range(3) if a in axes]  # axes left after indexing, in voxel order
        order = [kept.index(a) for a in axes]
        sample = {key: image[tuple(ix)].permute(*order).unsqueeze(0).clone(memory_format=torch.contiguous_format)
                  for key, image, ix in (("input", slot.input, index), ("target", slot.target, target_index))}
        sample.update(
            scale=slot.info["scale"],
            slice_axis=s,
            slice_thickness_mm=slot.info["slice_thickness_mm"],
            center=torch.tensor([c - p for c, p in zip(center, slot.pad, strict=True)], dtype=torch.int64),
            volume=slot.index,
        )
        return sample

    def stream(self, generator: torch.Generator, count: int | None = None) -> Iterator[dict[str, Any]]:
        """``count`` patches (None: endless) drawn with ``generator``."""
        order: list[int] = []
        pool: list[_Slot] = []
        produced = 0
        while count is None or produced < count:
            if len(pool) < self.pool_size:
                pool.append(self._new_slot(generator, order))
                continue
            j = _randint(len(pool), generator)
            slot = pool[j]
            yield self._patch(slot, generator)
            produced += 1
            slot.used += 1
            if slot.used >= self.pairs_per_volume:
                pool[j] = self._new_slot(generator, order)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        wid, workers = (0, 1) if worker is None else (worker.id, worker.num_workers)
        count = None
        if self.length is not None:
            count = self.length // workers + (1 if wid < self.length % workers else 0)
        return self.stream(stream_generator(self.seed, self.epoch, self.rank, wid), count)


# --------------------------------------------------------------------------- validation


def validation_pairs(
    data: Sequence[Volume | PathLikeArg] | Volume, protocol: Protocol, seed: int = 0
) -> list[dict[str, Any]]:
    """Whole-volume pairs at the protocol's nominal acquisition, one per volume.

    Noise and other random draws of volume ``i`` come from ``stream_generator(seed, -1, i)``
    (reproducible, independent of the training streams).

    Returns:
        dicts with ``input`` and ``target`` (float32 ``(C, X, Y, Z)`` normalised by the input's
        scale; both on the HR grid for pre-upsampling networks, the input on the acquired grid for
        post-upsampling ones: see :func:`make_pair`), ``scale``, ``name``, ``slice_axis`` and ``params``.
    """
    check_patch_dims(protocol)
    factors = network_factors(protocol)
    volumes = _as_volumes(data)
    _check_volumes(volumes, protocol.acquisition, nominal=True)
    params = protocol.acquisition.nominal()
    pairs = []
    for i, volume in enumerate(volumes):
        model_input, target, info = make_pair(volume, params, stream_generator(seed, 2**32 - 1, i), factors,
                                              training=False)
        pairs.append({
            "input": model_input,
            "target": target,
            "scale": info["scale"],
            "name": volume_name(volume, i),
            "slice_axis": info["slice_axis"],
            "params": params,
        })
    return pairs
