"""Optimisers (VDSR's SGD; Adam) and the per-iteration learning-rate schedules."""

from __future__ import annotations

import pytest
import torch

from mrisr.errors import InputError
from mrisr.train.optim import build_optimizer, build_scheduler


def _sgd():
    return build_optimizer("sgd", _params(), 0.1)


def _params():
    return torch.nn.Linear(3, 2).parameters()


def test_sgd_has_vdsr_defaults():
    opt = build_optimizer("sgd", _params(), lr=0.1)
    assert isinstance(opt, torch.optim.SGD)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.9, 1e-4)


def test_adam_takes_lr_and_weight_decay():
    opt = build_optimizer("adam", _params(), lr=1e-3, weight_decay=0.0)
    assert isinstance(opt, torch.optim.Adam)
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["weight_decay"]) == (1e-3, 0.0)


def _lrs(sched, n):
    """The lr used by each of n iterations (scheduler stepped after each optimiser step)."""
    opt = sched.optimizer
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_step_schedule_divides_by_ten_every_20_epochs_counted_in_iterations():
    steps = 5
    opt = build_optimizer("sgd", _params(), lr=0.1)
    sched = build_scheduler("step", opt, epochs=60, steps_per_epoch=steps)
    lrs = _lrs(sched, 60 * steps)
    epoch_lr = [lrs[e * steps] for e in range(60)]
    assert all(lr == pytest.approx(0.1) for lr in epoch_lr[:20])
    assert all(lr == pytest.approx(0.01) for lr in epoch_lr[20:40])
    assert all(lr == pytest.approx(0.001) for lr in epoch_lr[40:])
    assert lrs[20 * steps - 1] == pytest.approx(0.1)  # the drop comes exactly at epoch 20's first iteration


def test_cosine_schedule_anneals_to_zero():
    opt = build_optimizer("adam", _params(), lr=1e-3)
    sched = build_scheduler("cosine", opt, epochs=4, steps_per_epoch=10)
    lrs = _lrs(sched, 40)
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[20] == pytest.approx(5e-4)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] < 1e-5
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("call", "param"),
    [
        (lambda: build_optimizer("rmsprop", _params(), lr=0.1), "optimizer"),
        (lambda: build_optimizer("sgd", _params(), lr=0.0), "learning_rate"),
        (lambda: build_optimizer("sgd", _params(), lr=0.1, momentum=1.0), "momentum"),
        (lambda: build_optimizer("sgd", _params(), lr=0.1, weight_decay=-1e-4), "weight_decay"),
        (lambda: build_optimizer("sgd", [], lr=0.1), "params"),
        (lambda: build_scheduler("poly", _sgd(), epochs=1, steps_per_epoch=1), "schedule"),
        (lambda: build_scheduler("step", _sgd(), epochs=0, steps_per_epoch=1), "epochs"),
        (
            lambda: build_scheduler("cosine", _sgd(), epochs=2, steps_per_epoch=1.5),
            "steps_per_epoch",
        ),
        (
            lambda: build_scheduler("step", _sgd(), epochs=2, steps_per_epoch=1,
                                    gamma=2.0),
            "gamma",
        ),
    ],
)
def test_bad_arguments_name_the_parameter(call, param):
    with pytest.raises(InputError, match=rf"^{param}: "):
        call()


def test_bad_names_list_the_allowed():
    with pytest.raises(InputError, match="sgd, adam"):
        build_optimizer("rmsprop", _params(), lr=0.1)
    with pytest.raises(InputError, match="step, cosine"):
        build_scheduler("poly", _sgd(), epochs=1, steps_per_epoch=1)
