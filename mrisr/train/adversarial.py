"""SRGAN's adversarial stage on MONAI's ``SupervisedTrainer`` (the protocol's ``train.adversarial``).

The generator (any single-output network: SRResNet in ``protocols/srgan-thick-x4.yaml``) trains in
the same ``SupervisedTrainer`` as every other network, with the same data, gradient clipping,
checkpoints and validation. :class:`AdversarialStage` adds the two SRGAN pieces to it:

- on ``IterationEvents.FORWARD_COMPLETED`` (the generator's output is in ``engine.state.output``,
  its loss not yet computed) it takes one discriminator step on ``(hr, sr.detach())``
  (:func:`mrisr.train.gan.discriminator_loss`, its own Adam optimiser, clipped by the protocol's
  clipping rule), as the paper alternates: D first, then G against the updated D;
- it is the trainer's ``loss_function``: the three-term generator loss
  (:func:`mrisr.train.gan.srgan_generator_loss`) with the discriminator's parameters frozen for that
  pass, so the generator's backward leaves no gradient in the discriminator.

Until iteration ``start_iteration`` both are off: the pixel loss alone (SRResNet-MSE pretraining).
The perceptual feature network is trained on the run's own training volumes before the first step
(:func:`train_perceptual_features`), saved in the run directory and reused on resume.
The discriminator and its optimiser are part of the run's resume state.

Under CPU bfloat16 the discriminator and feature network run under the same autocast as the
generator; losses, weights and optimiser state stay float32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents
from monai.utils.enums import CommonKeys as Keys
from safetensors.torch import load_file, save_file
from torch import nn

from ..export.sidecar import sha256_file
from ..nets.srgan import Discriminator, MRIFeatureNet, train_feature_net
from ..protocol import AdversarialBlock, Protocol
from ..volume import Volume
from .data import PatchPairs
from .gan import discriminator_loss, freeze, srgan_generator_loss
from .handlers import GradientClipping
from .losses import PIXEL_LOSSES

__all__ = ["AdversarialStage", "FEATURE_STREAM_EPOCH", "build_discriminator", "load_or_train_features",
           "train_perceptual_features"]

#: The patch-stream epoch the feature network's patches are drawn from: one no training epoch reaches,
#: so its patches are independent of the generator's.
FEATURE_STREAM_EPOCH = 2**20


def build_discriminator(block: AdversarialBlock, spatial_dims: int) -> Discriminator:
    """The protocol's discriminator (one channel in, one logit out)."""
    norm = None if block.discriminator_norm == "none" else block.discriminator_norm
    return Discriminator(spatial_dims, features=block.discriminator_features, dense=block.discriminator_dense,
                         norm=norm)


def train_perceptual_features(volumes: list[Volume], proto: Protocol, seed: int,
                              device: torch.device) -> MRIFeatureNet:
    """An :class:`~mrisr.nets.srgan.MRIFeatureNet` trained for ``train.adversarial.feature_steps`` denoising
    steps on high-resolution training patches (``train.patch_size``, batches of ``train.batch_size``),
    drawn from the training volumes by the same patch stream as the generator's targets (another epoch
    key, :data:`FEATURE_STREAM_EPOCH`). Frozen on return."""
    block = proto.train.adversarial
    assert block is not None
    batch = proto.train.batch_size
    stream = iter(PatchPairs(volumes, proto, seed=seed, epoch=FEATURE_STREAM_EPOCH,
                             pairs_per_volume=proto.train.pairs_per_volume,
                             foreground_bias=proto.train.foreground_bias))

    def draw() -> torch.Tensor:
        return torch.stack([next(stream)["target"] for _ in range(batch)]).to(device)

    return train_feature_net(draw, steps=block.feature_steps, features=block.feature_widths, seed=seed,
                             batch_size=batch)


def load_or_train_features(folder: Path, volumes: list[Volume], proto: Protocol, seed: int, device: torch.device,
                           write: bool) -> tuple[MRIFeatureNet, dict[str, Any]]:
    """The run's feature network: read from ``folder`` (``feature_net.safetensors`` + ``.json``) when a
    previous start of this run saved it, else trained (:func:`train_perceptual_features`) and, when
    ``write``, saved there. Returns it (frozen) and its record for the model card."""
    weights, info = folder / "feature_net.safetensors", folder / "feature_net.json"
    if weights.is_file() and info.is_file():
        record = json.loads(info.read_text())
        net = MRIFeatureNet(**record["config"])
        net.load_state_dict(load_file(weights, device="cpu"))
        return freeze(net.to(device)), record
    net = train_perceptual_features(volumes, proto, seed, device)
    block = proto.train.adversarial
    assert block is not None
    record: dict[str, Any] = {"config": dict(net.config), "steps": block.feature_steps,
                              "trained_as": "denoising autoencoder on this run's training patches"}
    if write:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".feature_net.safetensors.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, tmp)
        tmp.rename(weights)
        record["sha256"] = sha256_file(weights)
        info.write_text(json.dumps(record, indent=1))
    return net, record


class AdversarialStage:
    """The discriminator step (an ignite handler) and the generator's loss (the trainer's ``loss_function``).

    Args:
        block: the protocol's ``train.adversarial``.
        discriminator: on the training device; trained here.
        feature_net: the frozen perceptual feature network (``features(x)``).
        pixel: the pixel loss name (``train.loss``).
        clipping: the generator's clipping rule, applied to the discriminator's gradients too.
        bf16: run the discriminator and the feature network under CPU bfloat16 autocast.
        feature_record: what the model card records of the feature network
            (:func:`load_or_train_features`).

    Attributes:
        optimizer: the discriminator's Adam (betas 0.9, 0.999).
        active: whether the current iteration is past ``start_iteration`` (set by the handler).
        totals: per-epoch sums of the discriminator's loss and outputs and of the generator's unweighted
            terms, with the steps that made them (read and reset by :meth:`epoch_means`).
    """

    def __init__(self, block: AdversarialBlock, discriminator: nn.Module, feature_net: nn.Module, pixel: str,
                 clipping: GradientClipping, bf16: bool = False, feature_record: dict[str, Any] | None = None) -> None:
        self.block = block
        self.discriminator = discriminator
        self.feature_net = freeze(feature_net)
        self.pixel = pixel
        self.clipping = clipping
        self.bf16 = bf16
        self.feature_record = dict(feature_record or {})
        self.optimizer = torch.optim.Adam(discriminator.parameters(), lr=block.discriminator_lr, betas=(0.9, 0.999))
        self.active = block.start_iteration == 0
        self.totals: dict[str, float] = {}

    def attach(self, trainer: Engine) -> None:
        """Run :meth:`discriminator_step` on the trainer's ``FORWARD_COMPLETED``."""
        trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, self.discriminator_step)

    def _autocast(self, device: torch.device) -> Any:
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16 and device.type == "cpu")

    def _add(self, key: str, value: float) -> None:
        self.totals[key] = self.totals.get(key, 0.0) + value

    def discriminator_step(self, engine: Engine) -> None:
        """One Adam step of the discriminator on the batch's targets (real) and the generator's
        detached output (fake); nothing before ``start_iteration``."""
        self.active = engine.state.iteration > self.block.start_iteration
        if not self.active:
            return
        sr = engine.state.output[Keys.PRED].detach().float()
        hr = engine.state.output[Keys.LABEL].float()
        d = self.discriminator.train().requires_grad_(True)
        with torch.autocast(sr.device.type, enabled=False), self._autocast(sr.device):
            real, fake = d(hr), d(sr)
        loss = discriminator_loss(real, fake)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.clipping.clip(self.optimizer)
        self.optimizer.step()
        self._add("d_steps", 1.0)
        self._add("d_loss", float(loss.detach()))
        self._add("d_real", float(torch.sigmoid(real.detach().float()).mean()))
        self._add("d_fake", float(torch.sigmoid(fake.detach().float()).mean()))

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """The generator's loss on a batch: the pixel loss alone before ``start_iteration``, then
        ``w_pixel * pixel + w_perceptual * perceptual + w_adversarial * -log D(sr)``."""
        if not self.active:
            return PIXEL_LOSSES[self.pixel](sr.float(), hr.float())
        b = self.block
        d = self.discriminator.requires_grad_(False)  # the generator's backward must not reach D's weights
        with self._autocast(sr.device):
            logits = d(sr) if b.w_adversarial else None
            total, parts = srgan_generator_loss(sr, hr, logits, self.feature_net if b.w_perceptual else None,
                                                pixel=self.pixel, w_pixel=b.w_pixel, w_perceptual=b.w_perceptual,
                                                w_adversarial=b.w_adversarial)
        self._add("g_steps", 1.0)
        for key, value in parts.items():
            self._add(f"g_{key}", float(value))
        return total

    def epoch_means(self) -> dict[str, float]:
        """The epoch's mean discriminator loss and ``D(hr)``/``D(sr)`` probabilities and the generator's
        mean unweighted terms (those that ran), then reset."""
        steps = {"d": self.totals.pop("d_steps", 0.0), "g": self.totals.pop("g_steps", 0.0)}
        means = {key: value / steps[key[0]] for key, value in self.totals.items() if steps[key[0]]}
        self.totals = {}
        return means

    def state_tensors(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        """What the run's resume state keeps of this stage."""
        return {"discriminator": self.discriminator, "discriminator_optimizer": self.optimizer}
