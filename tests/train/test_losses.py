"""Charbonnier and its multilevel (deep supervision) form: values, box-averaged pyramid targets, gradients."""

from __future__ import annotations

import pytest
import torch

from mrisr.errors import InputError
from mrisr.train.losses import charbonnier, multilevel_loss, pyramid_targets


def test_charbonnier_of_equal_tensors_is_eps() -> None:
    x = torch.randn(2, 1, 4, 5)
    torch.testing.assert_close(charbonnier(x, x), torch.tensor(1e-3))
    torch.testing.assert_close(charbonnier(x, x.clone(), eps=0.5), torch.tensor(0.5))
    assert charbonnier(x, x).ndim == 0


def test_charbonnier_is_close_to_l1_for_large_errors() -> None:
    torch.manual_seed(0)
    pred, target = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    diff = (pred - target).abs()
    l1 = diff.mean()
    value = charbonnier(pred, target)
    assert l1 <= value <= l1 + 1e-3  # sqrt(d^2 + e^2) lies in [|d|, |d| + e]
    big = charbonnier(100 * pred, 100 * target) / 100
    torch.testing.assert_close(big, l1, rtol=1e-5, atol=0)
    # and is float32 for bf16 inputs
    assert charbonnier(pred.bfloat16(), target.bfloat16()).dtype == torch.float32


def test_charbonnier_bad_arguments() -> None:
    with pytest.raises(InputError, match="differ"):
        charbonnier(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 1))
    for eps in (0.0, -1.0, True):
        with pytest.raises(InputError, match="eps"):
            charbonnier(torch.zeros(2), torch.zeros(2), eps=eps)


@pytest.mark.parametrize(
    ("shape", "level_scales", "expected"),
    [
        ((2, 1, 8, 16), [(1, 2), (1, 4)], [(2, 1, 8, 8), (2, 1, 8, 16)]),
        ((1, 1, 8, 16), [(1, 2), (1, 4), (1, 8)], [(1, 1, 8, 4), (1, 1, 8, 8), (1, 1, 8, 16)]),
        ((1, 2, 8, 12), [(2, 2), (4, 4)], [(1, 2, 4, 6), (1, 2, 8, 12)]),
        ((1, 1, 4, 6, 8), [(2, 1, 2), (4, 1, 4)], [(1, 1, 2, 6, 4), (1, 1, 4, 6, 8)]),
        ((1, 1, 6, 8), [(1, 4)], [(1, 1, 6, 8)]),
        ((1, 1, 12), [(3,), (6,)], [(1, 1, 6), (1, 1, 12)]),
    ],
)
def test_pyramid_target_shapes_and_means(shape: tuple, level_scales: list, expected: list) -> None:
    torch.manual_seed(1)
    target = torch.rand(shape)
    targets = pyramid_targets(target, level_scales)
    assert [tuple(t.shape) for t in targets] == expected
    assert targets[-1] is target
    for t in targets:  # box averaging over whole blocks keeps the mean (per image and channel)
        torch.testing.assert_close(t.mean(dim=tuple(range(2, t.ndim))), target.mean(dim=tuple(range(2, t.ndim))))


def test_pyramid_target_is_a_box_average_along_the_slice_axis() -> None:
    target = torch.arange(8.0).reshape(1, 1, 1, 8)
    coarse, middle, fine = pyramid_targets(target, [(1, 2), (1, 4), (1, 8)])
    assert coarse.flatten().tolist() == [1.5, 5.5]
    assert middle.flatten().tolist() == [0.5, 2.5, 4.5, 6.5]
    assert fine is target


@pytest.mark.parametrize(
    ("shape", "level_scales", "match"),
    [
        ((1, 1, 8, 10), [(1, 2), (1, 8)], "divisible"),
        ((1, 1, 8, 8), [(1, 3), (1, 4)], "divide"),
        ((1, 1, 8, 8), [], "level_scales"),
        ((1, 1, 8, 8), [(1, 2, 2)], "level_scales"),
        ((1, 1, 8, 8), [(1, 0)], "level_scales"),
        ((1, 1, 8, 8), [(1, 2.0)], "level_scales"),
        ((8,), [(2,)], "spatial"),
    ],
)
def test_pyramid_target_bad_arguments(shape: tuple, level_scales: list, match: str) -> None:
    with pytest.raises(InputError, match=match):
        pyramid_targets(torch.zeros(shape), level_scales)


def test_multilevel_loss_is_the_sum_over_levels_and_reaches_every_level() -> None:
    torch.manual_seed(2)
    scales = [(1, 2), (1, 4), (1, 8)]
    target = torch.rand(2, 1, 4, 16)
    outputs = [torch.rand(2, 1, 4, 16 * s[1] // 8, requires_grad=True) for s in scales]
    loss = multilevel_loss(outputs, target, scales)
    expected = sum(charbonnier(o, t) for o, t in zip(outputs, pyramid_targets(target, scales), strict=True))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    for out in outputs:
        assert out.grad is not None and torch.count_nonzero(out.grad) > 0
    # perfect outputs: eps per level
    perfect = multilevel_loss(pyramid_targets(target, scales), target, scales, eps=1e-2)
    torch.testing.assert_close(perfect, torch.tensor(3e-2))


def test_multilevel_loss_bad_outputs() -> None:
    target = torch.rand(1, 1, 4, 8)
    with pytest.raises(InputError, match="1 output"):
        multilevel_loss([target], target, [(1, 2), (1, 4)])
    with pytest.raises(InputError, match="level 1"):
        multilevel_loss([target, target], target, [(1, 2), (1, 4)])


def test_pixel_losses_by_name_and_other_pixel_losses_per_level() -> None:
    from mrisr.errors import InputError
    from mrisr.train.losses import pixel_loss

    a, b = torch.zeros(1, 1, 4, 8), torch.full((1, 1, 4, 8), 2.0)
    assert float(pixel_loss("mse")(a, b)) == 4.0 and float(pixel_loss("l1")(a, b)) == 2.0
    assert abs(float(pixel_loss("charbonnier")(a, b)) - 2.0) < 1e-5
    with pytest.raises(InputError, match="unknown loss"):
        pixel_loss("huber")
    scales = [(1, 2), (1, 4)]
    outs = [torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 8)]
    assert float(multilevel_loss(outs, b, scales, pixel_loss("mse"))) == 8.0  # 4 per level, summed
