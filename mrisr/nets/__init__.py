"""Networks: an explicit registry from the names protocols and model cards use to classes.

``NETWORKS`` is the whole list: a protocol's ``network.name`` and a model card's
``architecture.name`` are looked up here and nowhere else, and every network keeps its
constructor arguments in ``.config`` so that ``build_network(name, **config)`` rebuilds it.
"""

from __future__ import annotations

import inspect

from torch import nn

from ..errors import InputError
from ..protocol import NetworkBlock
from .espcn import ESPCN
from .lapsrn import LapSRN
from .rfdn import RFDN
from .srcnn import SRCNN
from .srgan import SRResNet
from .vdsr import VDSR

__all__ = ["ESPCN", "NETWORKS", "RFDN", "SRCNN", "VDSR", "LapSRN", "SRResNet", "build_network", "level_scales",
           "network_from_block", "network_name", "unwrap", "upsampling"]

#: Network name -> class. Each class takes ``spatial_dims`` and keeps its arguments in ``.config``.
NETWORKS: dict[str, type[nn.Module]] = {"vdsr": VDSR, "srcnn": SRCNN, "espcn": ESPCN, "lapsrn": LapSRN,
                                     "srresnet": SRResNet, "rfdn": RFDN}


def build_network(name: str, **kwargs: object) -> nn.Module:
    """A new network ``NETWORKS[name](**kwargs)``.

    Raises:
        InputError: an unknown name (listing the known ones), an argument the network does
            not take, or an argument out of range.
    """
    cls = NETWORKS.get(name) if isinstance(name, str) else None
    if cls is None:
        known = ", ".join(sorted(NETWORKS))
        raise InputError(f"unknown network {name!r}; known networks: {known}", "network", f"use one of: {known}")
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise InputError(f"network {name!r}: {exc}", "network", "give only the network's own arguments") from exc
    return cls(**kwargs)


def network_from_block(block: NetworkBlock) -> nn.Module:
    """The network a protocol's ``network`` block describes (one input and one output channel):
    ``spatial_dims``, the common arguments the block gives (``features``, ``depth``, ``scale``) and
    its ``options``; everything else takes the network's defaults."""
    kwargs: dict[str, object] = {"spatial_dims": block.spatial_dims}
    for key in ("features", "depth", "scale"):
        value = getattr(block, key)
        if value is not None:
            kwargs[key] = list(value) if isinstance(value, tuple) else value
    return build_network(block.name, **kwargs, **dict(block.options))


def upsampling(model: nn.Module) -> str:
    """``"pre"`` (input interpolated onto the target grid, output the same size: VDSR, SRCNN) or
    ``"post"`` (input on the acquired grid, output ``scale`` times larger: ESPCN, LapSRN,
    SRResNet, RFDN): the class attribute ``upsampling``, ``"pre"`` when a class has none."""
    kind = getattr(type(unwrap(model)), "upsampling", "pre")
    if kind not in ("pre", "post"):
        raise InputError(f"{type(model).__name__}.upsampling is {kind!r}", "model", "set it to 'pre' or 'post'")
    return kind


def level_scales(model: nn.Module) -> list[tuple[int, ...]]:
    """The integer factors per patch axis (coarse last) a post-upsampling network can output: one
    entry (its ``scale``), or one per level of a progressive network (``level_scales``, coarse to
    fine). Empty for pre-upsampling networks."""
    net = unwrap(model)
    if upsampling(net) == "pre":
        return []
    levels = getattr(net, "level_scales", None)
    return [tuple(int(f) for f in s) for s in levels] if levels else [tuple(int(f) for f in net.scale)]


def network_name(model: nn.Module) -> str:
    """The registry name of ``model``'s class (looking through DDP's ``.module`` and
    ``torch.compile``'s ``._orig_mod``).

    Raises:
        InputError: the class is not in :data:`NETWORKS`.
    """
    model = unwrap(model)
    for name, cls in NETWORKS.items():
        if type(model) is cls:
            return name
    known = ", ".join(sorted(NETWORKS))
    raise InputError(
        f"{type(model).__name__} is not a registered network (known: {known})",
        "model",
        "add it to mrisr.nets.NETWORKS",
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside DistributedDataParallel / DataParallel (``.module``) and
    ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model
