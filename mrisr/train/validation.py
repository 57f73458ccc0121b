"""Whole-volume prediction for validation (scored with :mod:`mrisr.evaluate.metrics`).

A 2D network runs on the planes that contain the degraded (slice) axis; a 3D network
through MONAI's sliding-window inferer with Gaussian blending.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.inferers import Inferer, SlidingWindowInferer

__all__ = ["predict_volume", "VolumeInferer"]


@torch.no_grad()
def predict_volume(
    model: torch.nn.Module,
    image: torch.Tensor,
    *,
    spatial_dims: int,
    slice_axis: int,
    roi_size: Sequence[int],
    device: torch.device | str,
    batch_size: int = 8,
) -> torch.Tensor:
    """The model's output for a normalised, pre-upsampled ``(C, X, Y, Z)`` volume (same shape, CPU).

    ``slice_axis`` (0, 1, 2) is the degraded voxel axis. 2D: each channel's planes spanned by
    the slice axis and the first other axis, batched over the remaining axis. 3D: sliding
    windows of ``roi_size`` with a quarter overlap, Gaussian blending, assembled on the CPU.
    """
    model.eval()
    out = torch.empty_like(image, device="cpu")
    if spatial_dims == 3:
        inferer = SlidingWindowInferer(roi_size=tuple(roi_size), sw_batch_size=batch_size, overlap=0.25,
                                       mode="gaussian", sw_device=device, device="cpu")
        # the layout of 3D training patches: in-plane axes in voxel order, then the slice axis
        order = [a for a in range(3) if a != slice_axis] + [slice_axis]
        back = [order.index(a) for a in range(3)]
        for c in range(image.shape[0]):
            laid = image[c].permute(*order)[None, None]
            out[c] = inferer(laid, model)[0, 0].cpu().permute(*back)
        return out
    partner = min(a for a in range(3) if a != slice_axis)
    rest = 3 - slice_axis - partner
    for c in range(image.shape[0]):
        planes = image[c].permute(rest, partner, slice_axis)  # (n_rest, n_partner, n_slice)
        result = torch.empty_like(planes, device="cpu")
        for start in range(0, planes.shape[0], batch_size):
            chunk = planes[start : start + batch_size][:, None].to(device)
            result[start : start + batch_size] = model(chunk)[:, 0].cpu()
        order = [0, 0, 0]
        order[rest], order[partner], order[slice_axis] = 0, 1, 2
        out[c] = result.permute(*order)
    return out


class VolumeInferer(Inferer):
    """A MONAI inferer over whole volumes ``(1, C, X, Y, Z)``: :func:`predict_volume`.

    The degraded axis comes per call (``slice_axis``), as the evaluator's ``prepare_batch``
    passes it along with each volume.
    """

    def __init__(self, spatial_dims: int, roi_size: Sequence[int], device: torch.device | str) -> None:
        super().__init__()
        self.spatial_dims, self.roi_size, self.device = spatial_dims, tuple(roi_size), device

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: object,
                 slice_axis: int = 2, **kwargs: object) -> torch.Tensor:
        return predict_volume(network, inputs[0].cpu(), spatial_dims=self.spatial_dims, slice_axis=slice_axis,
                              roi_size=self.roi_size, device=self.device)[None]
