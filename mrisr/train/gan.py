"""SRGAN's losses (Ledig et al., "Photo-Realistic Single Image Super-Resolution Using a Generative
Adversarial Network", CVPR 2017) and a no-reference sharpness measure to report beside PSNR/SSIM.

The generator's loss is the paper's perceptual loss, a content term plus ``1e-3`` times an adversarial
term, with a pixel term kept beside them:

``total = w_pixel * pixel(sr, hr) + w_perceptual * perceptual(sr, hr) + w_adversarial * -log D(sr)``

Weights (defaults) and why:

- ``w_adversarial = 1e-3``: the paper's.
- ``w_perceptual = 1.0``: the paper weighs its content loss 1 after rescaling VGG features by 1/12.75
  so that the VGG loss is of the scale of the MSE. The feature network here is trained on MRI
  (:class:`mrisr.nets.srgan.MRIFeatureNet`, no VGG), and each block's feature MSE is divided by that
  block's mean squared activation on clean patches (``feature_scale``), a constant playing the part of
  the 1/12.75; the blocks are averaged with equal weights (the paper uses the one VGG layer phi_5,4).
- ``w_pixel = 1.0`` (MSE by default, ``"l1"`` or ``"charbonnier"`` too): the paper's SRGAN-VGG54 has no
  pixel term (its SRGAN-MSE variant has one). It is kept because a diagnostic image must stay faithful
  to the acquisition: the pixel term anchors intensities and low frequencies and leaves the other two
  terms to shape the high frequencies, as later GAN super-resolution does (ESRGAN keeps an L1 term).
  Setting it to 0 is the paper's SRGAN-VGG54. The paper also pretrains the generator with the MSE
  alone (SRResNet-MSE): ``srgan_generator_loss(sr, hr, None, None, w_perceptual=0, w_adversarial=0)``.

The adversarial terms use logits and ``binary_cross_entropy_with_logits`` (numerically stable; the
discriminator has no sigmoid): the generator minimises ``-log D(G(z))`` (the paper's non-saturating
form), the discriminator ``-log D(hr) - log(1 - D(sr))``.

Adversarial training may invent plausible-looking detail that is not in the patient: report
:func:`sharpness` beside PSNR/SSIM, for the output and for the reference. A sharpness above the
reference's with a PSNR/SSIM below a non-adversarial network's flags invented texture or noise; one
well below the reference's, over-smoothing.

Losses are computed in float32 (bf16 autocast outputs included) and return 0-dimensional tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ..errors import InputError
from ..preprocess import foreground_mask
from .losses import PIXEL_LOSSES

__all__ = ["adversarial_generator_loss", "discriminator_loss", "freeze", "perceptual_loss", "sharpness",
           "srgan_generator_loss"]


def _float(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.dtype != torch.float64 else t


def _same_shape(sr: torch.Tensor, hr: torch.Tensor, where: str) -> None:
    if sr.shape != hr.shape:
        raise InputError(f"{where}: super-resolved {tuple(sr.shape)} and reference {tuple(hr.shape)} differ", "hr",
                         "give tensors of the same shape")


def _weight(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InputError(f"{name} must be a non-negative number, got {value!r}", name, "give e.g. 1.0 or 1e-3")
    return float(value)


def freeze(net: nn.Module) -> nn.Module:
    """``net`` in eval mode with ``requires_grad`` off on every parameter (in place; returns it)."""
    if net.training:
        net.eval()
    if any(p.requires_grad for p in net.parameters()):
        net.requires_grad_(False)
    return net


def perceptual_loss(feature_net: nn.Module, sr: torch.Tensor, hr: torch.Tensor,
                    weights: Sequence[float] | None = None) -> torch.Tensor:
    """``sum_l w_l * mse(phi_l(sr), phi_l(hr)) / feature_scale_l``: the content loss on a feature network.

    ``phi_l`` are ``feature_net.features(x)`` (a list, shallow to deep, e.g.
    :class:`mrisr.nets.srgan.MRIFeatureNet`); ``feature_scale`` is its buffer of each block's mean squared
    activation on clean patches (taken as ones when the network has none). The feature network is frozen
    first (:func:`freeze`: eval mode, no parameter gradients), so gradients reach ``sr`` (the generator)
    only; ``hr``'s features are computed without a graph.

    Args:
        feature_net: a module with ``features(x) -> list[Tensor]``.
        sr, hr: ``(N, C, *S)`` of the same shape, as the feature network takes them.
        weights: one non-negative weight per block; default equal weights summing to 1.

    Returns:
        A scalar tensor, 0 for identical images.

    Raises:
        InputError: shapes differ, a network without ``features``, or weights of the wrong count or sign.
    """
    _same_shape(sr, hr, "perceptual_loss")
    if not callable(getattr(feature_net, "features", None)):
        raise InputError(f"{type(feature_net).__name__} has no features(x) method", "feature_net",
                         "give an MRIFeatureNet (mrisr.nets.srgan.train_feature_net)")
    freeze(feature_net)
    with torch.no_grad():
        target = feature_net.features(hr)
    pred = feature_net.features(sr)
    count = len(pred)
    if weights is None:
        w = [1.0 / count] * count
    else:
        w = [_weight("weights", v) for v in weights] if isinstance(weights, Sequence) else []
        if len(w) != count:
            raise InputError(f"weights has {len(w)} entries for {count} feature blocks", "weights",
                             f"give {count} non-negative weights, or None")
    scale = getattr(feature_net, "feature_scale", None)
    scales = [1.0] * count if scale is None else [float(s) for s in scale]
    total = sr.new_zeros((), dtype=torch.float32)
    for wl, sl, p, t in zip(w, scales, pred, target, strict=True):
        if wl:
            total = total + (wl / sl) * nn.functional.mse_loss(_float(p), _float(t))
    return total


def adversarial_generator_loss(d_fake_logits: torch.Tensor) -> torch.Tensor:
    """``mean(-log sigmoid(D(sr)))``: BCE with logits against 1, the paper's ``-log D(G(z))``
    (``log 2`` at logit 0)."""
    logits = _float(d_fake_logits)
    return nn.functional.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


def discriminator_loss(d_real_logits: torch.Tensor, d_fake_logits: torch.Tensor) -> torch.Tensor:
    """``BCE(D(hr), 1) + BCE(D(sr), 0)`` with logits, each averaged over its batch (``2 log 2`` at logit 0).

    Compute ``d_fake_logits`` from ``sr.detach()`` so that this loss does not reach the generator. With a
    batch-norm discriminator, real and fake batches are normalised separately when passed separately
    (the usual practice); a batch of identical patches then carries no signal, so pass varied patches or
    one concatenated batch.
    """
    real, fake = _float(d_real_logits), _float(d_fake_logits)
    return (nn.functional.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + nn.functional.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def srgan_generator_loss(
    sr: torch.Tensor,
    hr: torch.Tensor,
    d_fake_logits: torch.Tensor | None,
    feature_net: nn.Module | None,
    pixel: str = "mse",
    w_pixel: float = 1.0,
    w_perceptual: float = 1.0,
    w_adversarial: float = 1e-3,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The generator's three-term loss (see the module docstring for the weights).

    Args:
        sr: the generator's output ``(N, C, *S)``; hr: the reference, the same shape.
        d_fake_logits: the discriminator's logits on ``sr`` (not detached); may be ``None`` when
            ``w_adversarial`` is 0.
        feature_net: the perceptual feature network (frozen here); may be ``None`` when ``w_perceptual`` is 0.
        pixel: ``"mse"``, ``"l1"`` or ``"charbonnier"``.
        w_pixel, w_perceptual, w_adversarial: non-negative weights.

    Returns:
        ``(total, parts)``: the weighted sum (a scalar tensor with a graph) and the unweighted terms,
        detached, under ``"pixel"``, ``"perceptual"`` and ``"adversarial"`` (each present when its inputs
        are; a term with inputs but weight 0 is reported and not added).

    Raises:
        InputError: shapes differ, an unknown pixel loss, a negative weight, or a weighted term without input.
    """
    _same_shape(sr, hr, "srgan_generator_loss")
    if pixel not in PIXEL_LOSSES:
        raise InputError(f"unknown pixel loss {pixel!r}", "pixel", f"use one of: {', '.join(PIXEL_LOSSES)}")
    weights = {"pixel": _weight("w_pixel", w_pixel), "perceptual": _weight("w_perceptual", w_perceptual),
               "adversarial": _weight("w_adversarial", w_adversarial)}
    if weights["perceptual"] and feature_net is None:
        raise InputError("w_perceptual > 0 needs a feature network", "feature_net",
                         "give one (mrisr.nets.srgan.train_feature_net), or w_perceptual=0")
    if weights["adversarial"] and d_fake_logits is None:
        raise InputError("w_adversarial > 0 needs the discriminator's logits on sr", "d_fake_logits",
                         "give discriminator(sr), or w_adversarial=0")
    terms: dict[str, torch.Tensor] = {"pixel": PIXEL_LOSSES[pixel](_float(sr), _float(hr))}
    if feature_net is not None:
        terms["perceptual"] = perceptual_loss(feature_net, sr, hr)
    if d_fake_logits is not None:
        terms["adversarial"] = adversarial_generator_loss(d_fake_logits)
    total = sr.new_zeros((), dtype=torch.float32)
    for name, value in terms.items():
        if weights[name]:
            total = total + weights[name] * value
    return total, {name: value.detach() for name, value in terms.items()}


def _as_array(name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def sharpness(image: Any, mask: Any = "auto", spacing: Sequence[float] | None = None,
              normalize: bool = True) -> float:
    """A no-reference sharpness: the root-mean-square Sobel gradient magnitude (the root of the
    Tenengrad measure) inside the foreground, divided by the foreground's mean absolute intensity.

    The gradient along each axis is Sobel's (central difference smoothed by ``[1, 2, 1] / 4`` along
    the other axes, edges replicated), scaled so that a ramp of slope 1 gives 1 per voxel, or per mm
    with ``spacing``. Squared gradients, unlike the mean gradient magnitude (which for a monotone edge
    is its height, whatever its blur), fall as an edge widens, roughly as ``1 / sqrt(width)``. Noise
    raises it too, so read it beside PSNR/SSIM and beside the reference's own value; divided by the mean
    intensity it does not depend on the intensity scale.

    Args:
        image: a 2D ``(X, Y)`` or 3D ``(X, Y, Z)`` array or tensor (one channel).
        mask: ``"auto"``: mrisr's foreground (voxels above 10% of the 99th percentile,
            :func:`mrisr.preprocess.foreground_mask`) dilated by one voxel so that the object's outer
            edge counts; ``None``: every voxel; or a boolean array of the image's shape.
        spacing: voxel size per axis (e.g. mm); default 1.
        normalize: divide by the foreground's mean absolute intensity (default); ``False`` gives the RMS
            gradient in intensity units.

    Returns:
        The sharpness, a float >= 0 (per voxel, or per unit of ``spacing``).

    Raises:
        InputError: not 2D/3D, a mask of another shape or empty, a bad spacing, or a zero foreground.
    """
    arr = _as_array("image", image).astype(np.float64)
    if arr.ndim not in (2, 3) or 0 in arr.shape:
        raise InputError(f"sharpness takes a non-empty 2D (X, Y) or 3D (X, Y, Z) image, got shape {arr.shape}",
                         "image", "give one channel of one image, e.g. volume.array[0]")
    if not np.all(np.isfinite(arr)):
        raise InputError("sharpness: the image has NaN or infinite values", "image", "give finite values")
    if spacing is None:
        step = [1.0] * arr.ndim
    else:
        try:
            step = [float(s) for s in spacing]
        except (TypeError, ValueError):
            step = []
        if len(step) != arr.ndim or not all(s > 0 for s in step):
            raise InputError(f"spacing must be {arr.ndim} positive numbers, got {spacing!r}", "spacing",
                             "give the voxel size per axis, e.g. [1.0, 1.0, 3.0]")
    if isinstance(mask, str) and mask == "auto":
        fg = foreground_mask(torch.from_numpy(arr)).numpy()
        fg = ndimage.binary_dilation(fg) if fg.any() else fg
    elif mask is None:
        fg = np.ones(arr.shape, dtype=bool)
    else:
        fg = _as_array("mask", mask)
        if fg.shape != arr.shape:
            raise InputError(f"mask shape {fg.shape} differs from the image's {arr.shape}", "mask",
                             "give a mask of the image's shape, 'auto' or None")
        fg = fg.astype(bool)
    if not fg.any():
        raise InputError("sharpness: the foreground mask is empty", "mask", "give an image or mask with foreground")
    norm = 2.0 * 4.0 ** (arr.ndim - 1)  # Sobel's weights: a unit ramp gives 2 * 4^(d-1)
    squared = np.zeros_like(arr)
    for axis in range(arr.ndim):
        squared += (ndimage.sobel(arr, axis=axis, mode="nearest") / (norm * step[axis])) ** 2
    rms = float(np.sqrt(squared[fg].mean()))
    if not normalize:
        return rms
    level = float(np.abs(arr[fg]).mean())
    if level == 0:
        raise InputError("sharpness: the foreground's mean intensity is 0", "image",
                         "give normalize=False, or an image with foreground")
    return rms / level
