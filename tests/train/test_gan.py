"""SRGAN's losses: BCE values on known logits, perceptual loss (zero for identical images, frozen feature
net, gradients to the generator only), the three-term generator loss, a discriminator step on a separable
toy, the sharpness measure, and one combined G/D step end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from mrisr.errors import InputError
from mrisr.nets.srgan import Discriminator, MRIFeatureNet, SRResNet, gaussian_blur
from mrisr.train.gan import (
    adversarial_generator_loss,
    discriminator_loss,
    perceptual_loss,
    sharpness,
    srgan_generator_loss,
)

LOG2 = math.log(2.0)


def test_bce_with_logits_on_known_values() -> None:
    zeros = torch.zeros(4, 1)
    assert math.isclose(float(adversarial_generator_loss(zeros)), LOG2, rel_tol=1e-6)
    assert math.isclose(float(discriminator_loss(zeros, zeros)), 2 * LOG2, rel_tol=1e-6)
    logits = torch.tensor([[-2.0], [0.5], [3.0]])
    softplus = torch.log1p(torch.exp(-logits)).mean()  # -log sigmoid(x)
    assert math.isclose(float(adversarial_generator_loss(logits.detach())), float(softplus), rel_tol=1e-6)
    # a confident, correct discriminator: loss near 0; the generator's loss is then large
    big = torch.full((2, 1), 20.0)
    assert float(discriminator_loss(big, -big)) < 1e-8
    assert math.isclose(float(adversarial_generator_loss(-big)), 20.0, rel_tol=1e-6)
    assert math.isclose(float(discriminator_loss(-big, big)), 40.0, rel_tol=1e-6)
    assert adversarial_generator_loss(zeros.bfloat16()).dtype == torch.float32


def _feature_net(seed: int = 0, **kwargs: object) -> MRIFeatureNet:
    torch.manual_seed(seed)
    return MRIFeatureNet(2, features=kwargs.pop("features", (4, 8)), **kwargs)  # type: ignore[arg-type]


def test_perceptual_loss_zero_for_identical_images_and_scaled_per_block() -> None:
    net = _feature_net()
    hr = torch.rand(2, 1, 16, 16)
    assert float(perceptual_loss(net, hr.clone(), hr)) == 0.0
    blurred = gaussian_blur(hr, [1.5, 1.5])
    loss = float(perceptual_loss(net, blurred, hr))
    assert loss > 0
    with torch.no_grad():
        a, b = net.features(blurred), net.features(hr)
    mse = [float((p - t).square().mean()) for p, t in zip(a, b, strict=True)]
    assert math.isclose(loss, (mse[0] + mse[1]) / 2, rel_tol=1e-5)  # default: equal weights summing to 1
    assert math.isclose(float(perceptual_loss(net, blurred, hr, weights=[0, 2])), 2 * mse[1], rel_tol=1e-5)
    with torch.no_grad():
        net.feature_scale.copy_(torch.tensor([2.0, 4.0]))  # each block's MSE divided by its scale
    assert math.isclose(float(perceptual_loss(net, blurred, hr)), (mse[0] / 2 + mse[1] / 4) / 2, rel_tol=1e-5)
    with pytest.raises(InputError, match="weights"):
        perceptual_loss(net, blurred, hr, weights=[1.0])
    with pytest.raises(InputError, match="weights"):
        perceptual_loss(net, blurred, hr, weights=[1.0, -1.0])
    with pytest.raises(InputError, match="hr"):
        perceptual_loss(net, blurred, hr[..., :8])
    with pytest.raises(InputError, match="feature_net"):
        perceptual_loss(torch.nn.Conv2d(1, 1, 3), blurred, hr)


def test_gradients_reach_the_generator_and_not_the_feature_net() -> None:
    torch.manual_seed(1)
    gen = SRResNet(2, scale=4, features=4, blocks=1)
    feat = _feature_net(2)
    feat.train()  # given trainable: the loss freezes it
    assert all(p.requires_grad for p in feat.parameters())
    lr, hr = torch.rand(2, 1, 16, 4), torch.rand(2, 1, 16, 16)
    before = {k: v.clone() for k, v in feat.state_dict().items()}
    perceptual_loss(feat, gen(lr), hr).backward()
    assert not feat.training and not any(p.requires_grad for p in feat.parameters())
    assert all(p.grad is None for p in feat.parameters())
    assert all(p.grad is not None and torch.count_nonzero(p.grad) > 0 for p in gen.parameters())
    assert all(torch.equal(v, feat.state_dict()[k]) for k, v in before.items())


def test_srgan_generator_loss_combines_the_three_terms() -> None:
    torch.manual_seed(3)
    feat = _feature_net(3)
    sr = torch.rand(2, 1, 16, 16, requires_grad=True)
    hr = torch.rand(2, 1, 16, 16)
    logits = torch.randn(2, 1, requires_grad=True)
    total, parts = srgan_generator_loss(sr, hr, logits, feat)
    assert set(parts) == {"pixel", "perceptual", "adversarial"}
    assert all(not v.requires_grad and v.ndim == 0 for v in parts.values())
    assert math.isclose(float(parts["pixel"]), float((sr - hr).detach().square().mean()), rel_tol=1e-6)
    assert math.isclose(float(parts["perceptual"]), float(perceptual_loss(feat, sr.detach(), hr)), rel_tol=1e-6)
    assert math.isclose(float(parts["adversarial"]), float(adversarial_generator_loss(logits.detach())), rel_tol=1e-6)
    expected = float(parts["pixel"]) + float(parts["perceptual"]) + 1e-3 * float(parts["adversarial"])
    assert math.isclose(float(total.detach()), expected, rel_tol=1e-6)
    total.backward()
    assert sr.grad is not None and logits.grad is not None
    # l1, other weights
    total, parts = srgan_generator_loss(sr, hr, logits, feat, pixel="l1", w_pixel=0.5, w_perceptual=0.0,
                                        w_adversarial=1e-2)
    assert math.isclose(float(parts["pixel"]), float((sr - hr).detach().abs().mean()), rel_tol=1e-6)
    assert math.isclose(float(total.detach()), 0.5 * float(parts["pixel"]) + 1e-2 * float(parts["adversarial"]),
                        rel_tol=1e-6)  # the perceptual term is reported, not added
    # the SRResNet-MSE pretraining: pixel only, no discriminator and no feature net
    total, parts = srgan_generator_loss(sr, hr, None, None, w_perceptual=0, w_adversarial=0)
    assert set(parts) == {"pixel"} and math.isclose(float(total.detach()), float(parts["pixel"]), rel_tol=1e-6)
    for kwargs, parameter in [(dict(pixel="ssim"), "pixel"), (dict(w_pixel=-1.0), "w_pixel"),
                              (dict(w_adversarial=True), "w_adversarial")]:
        with pytest.raises(InputError, match=parameter):
            srgan_generator_loss(sr, hr, logits, feat, **kwargs)
    with pytest.raises(InputError, match="feature_net"):
        srgan_generator_loss(sr, hr, logits, None)
    with pytest.raises(InputError, match="d_fake_logits"):
        srgan_generator_loss(sr, hr, None, feat)
    with pytest.raises(InputError, match="hr"):
        srgan_generator_loss(sr, hr[:1], logits, feat)


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_one_discriminator_step_increases_its_accuracy(seed: int) -> None:
    """Real patches bright, fake ones dark (the same texture): one Adam step on discriminator_loss
    separates them all (one batch, so batch norm sees both)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    d = Discriminator(2, features=4, dense=16)
    texture = torch.rand(8, 1, 16, 16, generator=g)
    real, fake = texture + 1.0, texture - 1.0

    def step_loss() -> tuple[torch.Tensor, float]:
        logits = d(torch.cat([real, fake]))
        accuracy = float(((logits[:8] > 0).sum() + (logits[8:] < 0).sum()) / 16)
        return discriminator_loss(logits[:8], logits[8:]), accuracy

    opt = torch.optim.Adam(d.parameters(), lr=1e-2)
    loss, before = step_loss()
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after_loss, after = step_loss()
    assert after > before and after == 1.0, (before, after)
    assert float(after_loss) < float(loss.detach())


def _step(n: int = 32, edge: int = 16) -> np.ndarray:
    image = np.zeros((n, n))
    image[:, edge:] = 1.0
    return image


def test_sharpness_of_a_sharp_and_a_blurred_step() -> None:
    sharp = _step()
    values = [sharpness(sharp)] + [sharpness(ndimage.gaussian_filter(sharp, s, mode="nearest")) for s in (1, 2, 4)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False)), values  # blur lowers it, monotonically
    assert values[0] > 1.5 * values[2] and values[0] > 2 * values[3]  # about 1 / sqrt(sigma) for wide blurs
    assert sharpness(np.ones((8, 8))) == 0.0  # a flat image
    # independent of the intensity scale; torch tensors and 3D images; spacing in mm
    assert math.isclose(sharpness(5 * sharp), values[0], rel_tol=1e-9)
    assert math.isclose(sharpness(torch.from_numpy(sharp).float()), values[0], rel_tol=1e-6)
    volume = np.repeat(sharp[:, :, None], 6, axis=2)
    assert math.isclose(sharpness(volume), values[0], rel_tol=1e-9)  # constant along the third axis
    assert math.isclose(sharpness(sharp, spacing=[1.0, 2.0]), values[0] / 2, rel_tol=1e-9)  # the edge is along y
    # a unit ramp has gradient 1 per voxel everywhere (edges replicated: the ends have half)
    ramp = np.tile(np.arange(10.0), (5, 1))
    assert math.isclose(sharpness(ramp, mask=None, normalize=False), math.sqrt((8 + 2 * 0.25) / 10), rel_tol=1e-9)
    # a mask: only its voxels count
    mask = np.zeros_like(sharp, dtype=bool)
    mask[:, 20:] = True
    assert sharpness(sharp, mask=mask) == 0.0


def test_sharpness_bad_inputs() -> None:
    for image, kwargs, parameter in [
        (np.zeros(5), {}, "image"),
        (np.zeros((2, 2, 2, 2)), {}, "image"),
        (np.zeros((4, 4)), {}, "mask"),  # an empty automatic foreground
        (_step(), {"mask": np.ones((3, 3), dtype=bool)}, "mask"),
        (_step(), {"spacing": [1.0]}, "spacing"),
        (_step(), {"spacing": [1.0, 0.0]}, "spacing"),
        (np.full((4, 4), np.nan), {}, "image"),
    ]:
        with pytest.raises(InputError, match=parameter):
            sharpness(image, **kwargs)


def test_one_combined_gan_step_changes_both_networks() -> None:
    """A discriminator step on (hr, sr.detach()), then a generator step on the three-term loss with the
    updated discriminator: both networks change, the frozen feature network does not."""
    torch.manual_seed(7)
    gen = SRResNet(2, scale=4, features=4, blocks=1)
    disc = Discriminator(2, features=2, dense=8)
    feat = _feature_net(8)
    hr = torch.rand(4, 1, 16, 16)
    lr = hr.reshape(4, 1, 16, 4, 4).mean(-1)
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3)
    g0 = [p.detach().clone() for p in gen.parameters()]
    d0 = [p.detach().clone() for p in disc.parameters()]
    f0 = [p.detach().clone() for p in feat.parameters()]

    sr = gen(lr)
    d_loss = discriminator_loss(disc(hr), disc(sr.detach()))
    opt_d.zero_grad()
    d_loss.backward()
    opt_d.step()
    assert all(p.grad is None for p in gen.parameters())  # the D step does not reach G

    disc.requires_grad_(False)
    total, parts = srgan_generator_loss(sr, hr, disc(sr), feat)
    opt_g.zero_grad()
    total.backward()
    opt_g.step()
    disc.requires_grad_(True)

    assert set(parts) == {"pixel", "perceptual", "adversarial"} and math.isfinite(float(total.detach()))
    assert all(p.grad is not None for p in gen.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(g0, gen.parameters(), strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(d0, disc.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(f0, feat.parameters(), strict=True))
