"""Gradient clipping on a real MONAI SupervisedTrainer with an exploding loss, and the CSV log."""

from __future__ import annotations

import math

import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.handlers import LrScheduleHandler

from mrisr.errors import InputError
from mrisr.train.handlers import GradientClipping
from mrisr.train.optim import build_optimizer, build_scheduler

THETA = 0.01


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3, padding=1)
    )


def _loader(n: int = 4, batch: int = 2, seed: int = 0) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(seed)
    shape = (1, 8, 8)
    data = [{"image": torch.randn(shape, generator=g), "label": 5 * torch.randn(shape, generator=g)} for _ in range(n)]
    return torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False)


def _exploding(scale: float):
    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return scale * torch.nn.functional.mse_loss(pred.float(), target.float())

    return loss


def _trainer(optimizer, net, *, epochs=1, n=4, scale=1e6, device="cpu", amp=False, **kwargs) -> SupervisedTrainer:
    return SupervisedTrainer(
        device=torch.device(device),
        max_epochs=epochs,
        train_data_loader=_loader(n),
        network=net,
        optimizer=optimizer,
        loss_function=_exploding(scale),
        amp=amp,
        **kwargs,
    )


def _capture(optimizer: torch.optim.Optimizer) -> list[list[tuple[float, list[torch.Tensor]]]]:
    """Record (lr, gradients) of every param group at each optimizer.step, i.e. what the step will use."""
    steps: list[list[tuple[float, list[torch.Tensor]]]] = []

    def hook(opt, args, kwargs):
        steps.append(
            [(g["lr"], [p.grad.detach().clone() for p in g["params"] if p.grad is not None]) for g in opt.param_groups]
        )

    optimizer.register_step_pre_hook(hook)
    return steps


def _max_abs(grads: list[torch.Tensor]) -> float:
    return max(float(g.abs().max()) for g in grads)


def _total_norm(groups) -> float:
    return math.sqrt(sum(float(g.double().pow(2).sum()) for _, grads in groups for g in grads))


def test_loss_explodes_without_clipping():
    torch.manual_seed(0)
    net = _net()
    opt = build_optimizer("sgd", net.parameters(), lr=0.1)
    steps = _capture(opt)
    _trainer(opt, net, n=2).run()
    assert _max_abs(steps[0][0][1]) > 100 * THETA / 0.1  # the bound below really bites


def test_adjustable_clipping_bounds_every_gradient_per_group():
    torch.manual_seed(0)
    net = _net()
    first, last = net[0], net[2]
    opt = build_optimizer("sgd", [{"params": first.parameters(), "lr": 0.1}, {"params": last.parameters()}], lr=0.01)
    steps = _capture(opt)
    trainer = _trainer(opt, net, epochs=2)
    GradientClipping("adjustable", THETA).attach(trainer)
    trainer.run()
    assert len(steps) == 4
    for groups in steps:
        for lr, grads in groups:
            bound = THETA / lr
            assert _max_abs(grads) <= bound * (1 + 1e-6)
            assert _max_abs(grads) == pytest.approx(bound)  # clipped, not merely small


def test_adjustable_bound_follows_the_schedule():
    torch.manual_seed(0)
    net = _net()
    opt = build_optimizer("sgd", net.parameters(), lr=0.1)
    sched = build_scheduler("step", opt, epochs=3, steps_per_epoch=2, step_epochs=1)
    steps = _capture(opt)
    trainer = _trainer(opt, net, epochs=3)
    GradientClipping("adjustable", THETA).attach(trainer)
    LrScheduleHandler(sched, epoch_level=False, print_lr=False).attach(trainer)
    trainer.run()
    lrs = [groups[0][0] for groups in steps]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    for lr, groups in zip(lrs, steps, strict=True):
        assert _max_abs(groups[0][1]) == pytest.approx(THETA / lr)


def test_norm_clipping_bounds_the_total_norm():
    torch.manual_seed(0)
    net = _net()
    opt = build_optimizer("adam", net.parameters(), lr=1e-3)
    steps = _capture(opt)
    trainer = _trainer(opt, net, epochs=2)
    GradientClipping("norm", 1.0).attach(trainer)
    trainer.run()
    assert len(steps) == 4
    for groups in steps:
        assert _total_norm(groups) <= 1.0 + 1e-5
        assert _total_norm(groups) == pytest.approx(1.0, rel=1e-5)


def _amp_trainer_cpu(opt, net, init_scale=2.0**10, **kwargs) -> SupervisedTrainer:
    """A trainer on the AMP path on CPU: autocast("cuda") is disabled without CUDA, but the scaler is real.

    ``Trainer.run`` makes a new (CUDA, so here disabled) ``GradScaler``; swap in a CPU one when the run starts.
    """
    trainer = _trainer(opt, net, amp=True, **kwargs)

    def cpu_scaler(engine):
        engine.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)

    trainer.add_event_handler(Events.STARTED, cpu_scaler)
    return trainer


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("mode", ["adjustable", "norm"])
def test_amp_unscales_before_clipping(mode):
    """With a GradScaler, the bound holds in true units: scaler.step does not divide the clipped gradients again."""
    torch.manual_seed(0)
    net = _net()
    opt = build_optimizer("sgd", net.parameters(), lr=0.1)
    steps = _capture(opt)
    scales = []
    opt.register_step_pre_hook(lambda *_: scales.append(trainer.scaler.get_scale()))
    trainer = _amp_trainer_cpu(opt, net, epochs=2)
    GradientClipping(mode, THETA if mode == "adjustable" else 1.0).attach(trainer)
    trainer.run()
    assert len(steps) == 4 and min(scales) > 1
    for groups in steps:
        if mode == "adjustable":
            assert _max_abs(groups[0][1]) == pytest.approx(THETA / 0.1)
        else:
            assert _total_norm(groups) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_amp_no_double_unscale_and_accumulation():
    """Another handler that unscaled first is tolerated; with accumulation only the stepping iteration clips."""
    torch.manual_seed(0)
    net = _net()
    opt = build_optimizer("sgd", net.parameters(), lr=0.1)
    steps = _capture(opt)
    trainer = _amp_trainer_cpu(opt, net, epochs=1, n=8, accumulation_steps=2)
    seen = []

    def early_unscale(engine):
        seen.append(engine.state.iteration)
        if engine.state.iteration == 4:
            engine.scaler.unscale_(engine.optimizer)

    trainer.add_event_handler(IterationEvents.BACKWARD_COMPLETED, early_unscale)
    GradientClipping("adjustable", THETA).attach(trainer)
    trainer.run()
    assert seen == [1, 2, 3, 4] and len(steps) == 2
    for groups in steps:
        assert _max_abs(groups[0][1]) == pytest.approx(THETA / 0.1)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["adjustable", "norm"])
def test_amp_on_cuda_clips_unscaled_gradients(mode):
    torch.manual_seed(0)
    net = _net().cuda()
    opt = build_optimizer("sgd", net.parameters(), lr=0.1)
    steps = _capture(opt)
    scales = []
    opt.register_step_pre_hook(lambda *_: scales.append(trainer.scaler.get_scale()))
    trainer = _trainer(opt, net, epochs=20, scale=1e3, device="cuda", amp=True)
    assert trainer.scaler is not None and trainer.scaler.is_enabled()
    GradientClipping(mode, THETA if mode == "adjustable" else 1.0).attach(trainer)
    trainer.run()
    assert steps and min(scales) > 1  # steps taken while the loss was still scaled up
    for groups in steps:
        if mode == "adjustable":
            assert _max_abs(groups[0][1]) == pytest.approx(THETA / 0.1, rel=1e-4)
        else:
            assert _total_norm(groups) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"mode": "clip", "theta": 0.01}, "mode"),
        ({"mode": "norm", "theta": 0.0}, "theta"),
        ({"mode": "adjustable", "theta": -1.0}, "theta"),
        ({"mode": "adjustable", "theta": float("nan")}, "theta"),
        ({"mode": "adjustable", "theta": True}, "theta"),
    ],
)
def test_bad_arguments_name_the_parameter(kwargs, param):
    with pytest.raises(InputError, match=rf"^{param}: ") as info:
        GradientClipping(**kwargs)
    if param == "mode":
        assert "adjustable, norm" in str(info.value)


def test_attach_needs_an_optimizer():
    with pytest.raises(InputError, match="optimizer"):
        GradientClipping("norm", 1.0).attach(Engine(lambda e, b: None))
