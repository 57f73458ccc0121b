"""Whole-volume validation through inference's own runner (:func:`mrisr.infer.runner.predict_normalised`),
so the PSNR/SSIM a run's card records (scored with :mod:`mrisr.evaluate.metrics`) is what
``upscale`` gives users: 2D models on both plane families, fused; 3D models in sliding windows
of the training patch size; magnitude clipped at 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import Inferer

from ..infer.runner import input_window, predict_normalised
from ..models.loaded import LoadedModel

__all__ = ["VolumeInferer"]


class VolumeInferer(Inferer):
    """A MONAI inferer over whole normalised volumes ``(1, C, X, Y, Z)`` (pre-upsampled, or on the acquired
    grid for post-upsampling networks, whose output is put on ``target_shape``).

    Args:
        spatial_dims: the network's (2 or 3).
        patch_size: the training patch size: the 3D sliding window (2D models run whole planes).
        device: where the network runs.

    The degraded axis and the target grid's shape come per call (``slice_axis``, ``target_shape``), as
    the evaluator's ``prepare_batch`` passes them along with each volume.
    """

    def __init__(self, spatial_dims: int, patch_size: Sequence[int], device: torch.device | str) -> None:
        super().__init__()
        self.spatial_dims, self.patch_size, self.device = spatial_dims, tuple(patch_size), str(device)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: object,
                 slice_axis: int = 2, target_shape: Sequence[int] | None = None, **kwargs: object) -> torch.Tensor:
        loaded = LoadedModel(network, {}, "the network being trained", self.device)
        roi = input_window(network, self.patch_size) if self.spatial_dims == 3 else None
        was_training = network.training
        network.eval()
        try:
            return predict_normalised(loaded, inputs[0], slice_axis, target_shape=target_shape, roi_size=roi)[None]
        finally:
            network.train(was_training)
