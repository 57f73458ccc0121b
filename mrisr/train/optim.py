"""Optimisers and learning-rate schedules for training.

VDSR (Kim et al. 2016) trains with SGD, momentum 0.9 and weight decay 1e-4, and
divides the learning rate by 10 every 20 epochs; cosine annealing over the whole
run is the other schedule offered.

Schedules step once per **iteration**, not per epoch: :func:`build_scheduler`
converts epochs to iterations with ``steps_per_epoch``, so a run that stops and
resumes in the middle of an epoch, or a ``--max-steps`` cut, sees the same
learning rate as an uninterrupted run, and cosine annealing is smooth. The
trainer steps the schedule after each optimiser step, e.g. with
``monai.handlers.LrScheduleHandler(scheduler, epoch_level=False, print_lr=False)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch

from mrisr.errors import InputError

__all__ = ["OPTIMIZERS", "SCHEDULERS", "build_optimizer", "build_scheduler"]

#: Names accepted by :func:`build_optimizer`.
OPTIMIZERS = ("sgd", "adam")
#: Names accepted by :func:`build_scheduler`.
SCHEDULERS = ("step", "cosine")


def _number(name: str, value: Any, *, low: float, low_inclusive: bool, high: float = math.inf) -> float:
    """``value`` as a float within (or at) ``low`` and below ``high``, else an :class:`InputError` naming it."""
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= low if low_inclusive else value > low)
        and value < high
    )
    if not ok:
        bound = f"{'>=' if low_inclusive else '>'} {low}" + ("" if math.isinf(high) else f" and < {high}")
        raise InputError(f"{value!r} is not a finite number {bound}", path=name, fix=f"give a number {bound}")
    return float(value)


def _count(name: str, value: Any) -> int:
    """``value`` as a positive int, else an :class:`InputError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{value!r} is not a positive integer", path=name, fix="give a whole number >= 1")
    return value


def build_optimizer(
    name: Literal["sgd", "adam"],
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
) -> torch.optim.Optimizer:
    """The optimiser ``name`` over ``params``.

    Args:
        name: ``"sgd"`` (VDSR: SGD with ``momentum`` and ``weight_decay``) or
            ``"adam"`` (``momentum`` is ignored; ``weight_decay`` is Adam's L2 term).
        params: the parameters (or parameter groups) to optimise.
        lr: the initial learning rate, > 0.
        momentum: SGD momentum in [0, 1).
        weight_decay: L2 penalty, >= 0.

    Raises:
        InputError: an unknown ``name`` (the message lists the allowed ones) or a value out of range.
    """
    if name not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {name!r}", path="optimizer", fix=f"use one of {', '.join(OPTIMIZERS)}")
    lr = _number("learning_rate", lr, low=0.0, low_inclusive=False)
    momentum = _number("momentum", momentum, low=0.0, low_inclusive=True, high=1.0)
    weight_decay = _number("weight_decay", weight_decay, low=0.0, low_inclusive=True)
    params = list(params)
    if not params:
        raise InputError("no parameters to optimise", path="params", fix="pass the network's parameters()")
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def build_scheduler(
    name: Literal["step", "cosine"],
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    step_epochs: int = 20,
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule ``name``, to be stepped once per iteration.

    Args:
        name: ``"step"`` (VDSR: multiply the lr by ``gamma`` every ``step_epochs``
            epochs, i.e. every ``step_epochs * steps_per_epoch`` iterations) or
            ``"cosine"`` (anneal from the initial lr to 0 over ``epochs * steps_per_epoch``
            iterations).
        optimizer: the optimiser whose learning rate is scheduled.
        epochs: the length of the run in epochs.
        steps_per_epoch: optimiser steps per epoch (batches per epoch).
        step_epochs: epochs between decays of the step schedule.
        gamma: the step schedule's decay factor, in (0, 1].

    Raises:
        InputError: an unknown ``name`` (the message lists the allowed ones) or a value out of range.
    """
    if name not in SCHEDULERS:
        raise InputError(f"unknown schedule {name!r}", path="schedule", fix=f"use one of {', '.join(SCHEDULERS)}")
    epochs = _count("epochs", epochs)
    steps_per_epoch = _count("steps_per_epoch", steps_per_epoch)
    if name == "step":
        step_epochs = _count("step_epochs", step_epochs)
        gamma = _number("gamma", gamma, low=0.0, low_inclusive=False, high=1.0 + 1e-12)
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_epochs * steps_per_epoch, gamma=gamma)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch, eta_min=0.0)
