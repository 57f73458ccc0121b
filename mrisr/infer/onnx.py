"""Export a network to ONNX, for runtimes other than PyTorch, checked against torch.

The graph takes ``"input"`` and gives ``"output"``, both ``(N, C, *spatial)`` float32, with
the batch and every spatial axis dynamic, so one file runs any volume (or plane) size. The
channel axis is fixed by the network. The exporter is PyTorch's TorchScript-based one
(``dynamo=False``): it needs only ``onnx`` (and ``onnxruntime`` for the check), not
``onnxscript``, and it supports opsets 17 to 20.

The model card's essentials go into the ONNX ``metadata_props`` (text keys and values)::

    mrisr.format            "mrisr-onnx"
    mrisr.format_version    "1"
    mrisr.version           the mrisr that exported it
    mrisr.architecture      JSON {"name": "vdsr", "config": {"spatial_dims": 3, ...}}
    mrisr.spatial_dims      "2" or "3"
    mrisr.in_channels       channels of "input"
    mrisr.out_channels      channels of "output"
    mrisr.layout            "(N, C, H, W)" or "(N, C, D, H, W)"
    mrisr.upsampling        "pre" (output the input's size) or "post" (output grown by mrisr.scale)
    mrisr.scale             JSON factors per spatial axis of "output" over "input" (post), else null
    mrisr.source            the checkpoint's card file name      (from a checkpoint only)
    mrisr.source_sha256     the checkpoint weights' sha256       (from a checkpoint only)
    mrisr.source_card_sha256  the checkpoint card's sha256       (from a checkpoint only)
    mrisr.trained_with_mrisr  the card's mrisr_version           (from a checkpoint only)
    mrisr.perceptual        "true" and mrisr.perceptual_note: the card flags the model as perceptual
                            (adversarially trained: may invent detail)  (from a checkpoint only)
"""

from __future__ import annotations

import copy
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import InputError, OutputError
from ..export.sidecar import sha256_file
from ..io.atomic import atomic_output, check_writable
from ..nets import level_scales, network_name, unwrap, upsampling

__all__ = ["export_onnx", "check_onnx", "read_onnx_metadata", "MIN_OPSET", "MAX_OPSET", "TOLERANCE"]

#: The lowest opset exported (the issue asks for >= 17).
MIN_OPSET = 17
#: The highest opset PyTorch's TorchScript-based exporter writes.
MAX_OPSET = 20
#: Largest allowed ``max |onnx - torch|``, relative to the torch output's range (at least 1).
TOLERANCE = 1e-4
#: The metadata's ``mrisr.format`` / ``mrisr.format_version``.
FORMAT = "mrisr-onnx"
FORMAT_VERSION = 1

#: Spatial size of the dummy input the graph is traced with (batch 1), per spatial_dims.
_EXPORT_SIZE = {2: (16, 16), 3: (8, 8, 8)}
#: Spatial size of the check's input (batch 2): different from the dummy on every axis.
_CHECK_SIZE = {2: (23, 19), 3: (11, 9, 13)}
_AXIS_NAMES = {2: ("height", "width"), 3: ("depth", "height", "width")}
_MISSING = "ONNX export needs the onnx and onnxruntime packages"
_INSTALL = "pip install 'mrisr[onnx]'"


def _import_onnx(runtime: bool) -> tuple[Any, Any]:
    """``(onnx, onnxruntime or None)``, or the InputError that says how to install them."""
    try:
        import onnx
    except ImportError as exc:
        raise InputError(_MISSING, fix=_INSTALL) from exc
    if not runtime:
        return onnx, None
    try:
        import onnxruntime
    except ImportError as exc:
        raise InputError(_MISSING, fix=_INSTALL) from exc
    return onnx, onnxruntime


def _prepare(model: nn.Module | str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any], list[Path]]:
    """A CPU float32 eval-mode copy of the network, its metadata, and the checkpoint files (if any)."""
    meta: dict[str, Any] = {}
    sources: list[Path] = []
    if isinstance(model, (str, os.PathLike)):
        from ..models.card import PERCEPTUAL_NOTE, card_path, is_perceptual, load_checkpoint
        from ..models.loaded import checkpoint_location

        location = checkpoint_location(model)  # a shipped name, run folder, checkpoint folder, card or weights
        net, card = load_checkpoint(location, "cpu")
        card_file = card_path(location)
        sources = [card_file, card_file.parent / card["weights"]["file"]]
        arch = card["architecture"]
        meta.update(
            {
                "mrisr.source": card_file.name,
                "mrisr.source_sha256": card["weights"]["sha256"].lower(),
                "mrisr.source_card_sha256": sha256_file(card_file),
            }
        )
        if isinstance(card.get("mrisr_version"), str):
            meta["mrisr.trained_with_mrisr"] = card["mrisr_version"]
        if is_perceptual(card):
            meta.update({"mrisr.perceptual": "true", "mrisr.perceptual_note": PERCEPTUAL_NOTE})
    elif isinstance(model, nn.Module):
        net = unwrap(model)
        config = getattr(net, "config", None)
        if not (isinstance(config, dict) and config.get("spatial_dims") in (2, 3)):
            raise InputError(
                f"{type(net).__name__} has no .config dict with spatial_dims 2 or 3",
                "model",
                "give a network from mrisr.nets (or one that keeps its arguments in .config), or a checkpoint path",
            )
        try:
            name = network_name(net)
        except InputError:  # not registered: still exportable, named by its class
            name = f"{type(net).__module__}.{type(net).__qualname__}"
        arch = {"name": name, "config": config}
        net = copy.deepcopy(net)
    else:
        raise InputError(
            f"model must be a torch module or a checkpoint path, got {type(model).__name__}",
            "model",
            "give an nn.Module or the path of a checkpoint's .json card, .safetensors weights or folder",
        )
    net = net.to("cpu", torch.float32).eval()
    config = arch["config"]
    dims = int(config["spatial_dims"])
    in_channels = int(config.get("in_channels", 1))
    out_channels = int(config.get("out_channels", in_channels))
    meta.update(
        {
            "mrisr.format": FORMAT,
            "mrisr.format_version": str(FORMAT_VERSION),
            "mrisr.version": __version__,
            "mrisr.architecture": json.dumps(arch, sort_keys=True),
            "mrisr.spatial_dims": str(dims),
            "mrisr.in_channels": str(in_channels),
            "mrisr.out_channels": str(out_channels),
            "mrisr.layout": "(N, C, H, W)" if dims == 2 else "(N, C, D, H, W)",
            "mrisr.upsampling": upsampling(net),
            "mrisr.scale": json.dumps(list(level_scales(net)[-1])) if level_scales(net) else "null",
        }
    )
    return net, meta, sources


def _export_bytes(net: nn.Module, dims: int, in_channels: int, opset: int) -> bytes:
    """The ONNX graph of ``net`` as bytes: "input" -> "output", batch and spatial axes dynamic."""
    dummy = torch.zeros(1, in_channels, *_EXPORT_SIZE[dims])
    axes = {0: "batch", **{2 + i: name for i, name in enumerate(_AXIS_NAMES[dims])}}
    scales = level_scales(net)
    factors = scales[-1] if scales else (1,) * dims  # a progressive network exports its finest level
    grown = {0: "batch", **{2 + i: f"{name}_x{f}" if f > 1 else name
                            for i, (name, f) in enumerate(zip(_AXIS_NAMES[dims], factors, strict=True))}}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter warns that it is deprecated; tracing warns about VDSR's shape
        # check (a Python bool of a constant shape), which is what we want traced away.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            net,
            (dummy,),
            buffer,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": axes, "output": grown},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return buffer.getvalue()


def check_onnx(
    path: str | os.PathLike[str],
    model: nn.Module,
    shape: tuple[int, ...] | None = None,
    *,
    tolerance: float = TOLERANCE,
    seed: int = 0,
) -> float:
    """Run the ONNX file with onnxruntime (CPU) and ``model`` with torch on one random input.

    Args:
        path: the ONNX file.
        model: the torch network it was exported from (run on the CPU in float32, eval mode).
        shape: the input's shape ``(N, C, *spatial)``; by default batch 2 and a spatial size
            that differs from the export's dummy on every axis, so the dynamic axes are tested.
        tolerance: the largest allowed ``max |onnx - torch| / max(range of torch output, 1)``.
        seed: of the random input.

    Returns:
        The relative difference ``max |onnx - torch| / max(range, 1)``.

    Raises:
        InputError: onnx/onnxruntime are missing.
        OutputError: the file does not run in onnxruntime, gives another shape, or differs
            from torch by more than ``tolerance``.
    """
    _, ort = _import_onnx(runtime=True)
    path = Path(path)
    net = unwrap(model)
    if shape is None:
        config = getattr(net, "config", {})
        dims = int(config["spatial_dims"])
        shape = (2, int(config.get("in_channels", 1)), *_CHECK_SIZE[dims])
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=generator)
    fix = "report this as a bug in mrisr, with the model card"
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        got = session.run(["output"], {"input": x.numpy()})[0]
    except Exception as exc:  # onnxruntime raises its own exception types
        raise OutputError(f"onnxruntime cannot run the exported model: {exc}", path, fix) from exc
    with torch.no_grad():
        expected = copy.deepcopy(net).to("cpu", torch.float32).eval()(x)  # the caller's model stays as it was
    got = torch.from_numpy(got)
    if got.shape != expected.shape:
        raise OutputError(
            f"onnxruntime gives shape {tuple(got.shape)} for input {tuple(shape)}, torch {tuple(expected.shape)}",
            path,
            fix,
        )
    scale = max(float(expected.max() - expected.min()), 1.0)
    diff = float((got - expected).abs().max()) / scale
    if not diff <= tolerance:  # also catches NaN
        raise OutputError(
            f"onnxruntime differs from torch by {diff:.3g} (relative to the output range) on input "
            f"{tuple(shape)}, more than {tolerance:g}",
            path,
            fix,
        )
    return diff


def read_onnx_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict (without loading the weights).

    Raises:
        InputError: onnx is missing, or the file cannot be read as ONNX.
    """
    onnx, _ = _import_onnx(runtime=False)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, OSError...
        raise InputError(f"not a readable ONNX file: {exc}", path, "give a .onnx file") from exc
    return {p.key: p.value for p in proto.metadata_props}


def export_onnx(
    model: nn.Module | str | Path,
    path: str | os.PathLike[str],
    *,
    opset: int = MIN_OPSET,
    force: bool = False,
    check: bool = True,
) -> Path:
    """Export a network to an ONNX file with dynamic batch and spatial axes, checked against torch.

    Args:
        model: a network with ``.config`` (``spatial_dims`` 2 or 3; ``in_channels`` and
            ``out_channels`` default to 1), e.g. from :mod:`mrisr.nets` (DDP and
            ``torch.compile`` wrappers are looked through; the network itself is left as it
            was), or every form ``mrisr upscale --model`` takes: a shipped model's name, a
            training run's folder, a checkpoint's folder, ``.json`` card or ``.safetensors``
            weights (see :func:`mrisr.models.loaded.checkpoint_location`).
        path: the ``.onnx`` file to write (atomically: written beside it, then renamed).
        opset: the ONNX opset, 17 to 20.
        force: replace an existing file.
        check: run the file in onnxruntime on a random batch of 2 whose spatial size differs
            from the export's, and compare with torch (see :func:`check_onnx`); on failure
            nothing is written.

    Returns:
        ``path``, as a Path.

    Raises:
        InputError: onnx/onnxruntime are missing (``pip install 'mrisr[onnx]'``); an opset
            out of range; a model without a usable ``.config``; an unreadable checkpoint.
        OutputError: ``path`` exists and ``force`` is false, or is a checkpoint file; the
            export fails; the check fails (onnxruntime differs from torch by more than 1e-4,
            relative to the output range).
    """
    onnx, _ = _import_onnx(runtime=check)
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise InputError(
            f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET}, got {opset!r}",
            "opset",
            f"give an opset from {MIN_OPSET} to {MAX_OPSET}",
        )
    path = Path(path)
    check_writable(path, force, kind="file")  # before loading or exporting anything
    net, meta, sources = _prepare(model)
    dims = int(meta["mrisr.spatial_dims"])
    in_channels = int(meta["mrisr.in_channels"])

    with atomic_output(path, force, sources=sources) as tmp:
        try:
            proto = onnx.load_from_string(_export_bytes(net, dims, in_channels, opset))
        except Exception as exc:  # the exporter raises many kinds (RuntimeError, OnnxExporterError...)
            raise OutputError(
                f"torch.onnx.export failed: {exc}", path, "report this as a bug in mrisr, with the model card"
            ) from exc
        del proto.metadata_props[:]
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name = "mrisr"
        proto.producer_version = __version__
        scales = level_scales(net)
        size = (f"output the input's size times {list(scales[-1])} per spatial axis (post-upsampling"
                f"{', its finest level' if len(scales) > 1 else ''})" if scales else "output the same size")
        proto.doc_string = (
            f"mrisr {json.loads(meta['mrisr.architecture'])['name']}: input {meta['mrisr.layout']} float32, "
            f"{size}; batch and spatial axes are dynamic"
        )
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as exc:
            raise OutputError(
                f"the exported graph is not valid ONNX: {exc}", path, "report this as a bug in mrisr"
            ) from exc
        onnx.save(proto, str(tmp))
        if check:
            check_onnx(tmp, net)
    return path
