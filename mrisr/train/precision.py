"""Training under the same precision switch as inference (:mod:`mrisr.infer.precision`).

With ``bfloat16`` the network's forward pass runs under ``torch.autocast("cpu", bfloat16)`` with
channels-last memory; the weights, the optimiser state, the gradients the optimiser sees, the
loss and gradient clipping stay float32 (autocast casts per operation; bf16 has float32's
exponent range, so no loss scaling is needed). VDSR's residual sum ``x + body(x)`` is float32
because ``x`` is. Measured on a 2-core AVX512-BF16 EPYC: a training step of the shipped 2D
protocol 2.2x, of the 3D protocol 2.0x faster (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer

from ..infer.precision import channels_last

__all__ = ["Bf16Inferer", "LevelsInferer"]


class Bf16Inferer(Inferer):
    """MONAI inferer for :class:`monai.engines.SupervisedTrainer`: ``network(inputs)`` under CPU
    bfloat16 autocast, inputs in channels-last memory, the prediction returned as float32.

    The network itself must already be in channels-last memory (``model.to(memory_format=...)``).
    """

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        inputs = inputs.contiguous(memory_format=channels_last(inputs.ndim))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return network(inputs, *args, **kwargs).float()


class LevelsInferer(Inferer):
    """MONAI inferer for progressive networks (LapSRN): every level's output, coarse to fine
    (``forward_levels``), for deep supervision (:func:`mrisr.train.losses.multilevel_loss`); under
    CPU bfloat16 autocast with channels-last inputs when ``bf16`` (outputs returned as float32).
    The network must not be wrapped (DistributedDataParallel would be bypassed)."""

    def __init__(self, bf16: bool = False) -> None:
        super().__init__()
        self.bf16 = bf16

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> list[torch.Tensor]:
        if self.bf16:
            inputs = inputs.contiguous(memory_format=channels_last(inputs.ndim))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            return [y.float() for y in network.forward_levels(inputs)]
