"""Ignite handlers for MONAI's ``SupervisedTrainer``: gradient clipping.

:class:`GradientClipping` runs on ``IterationEvents.BACKWARD_COMPLETED``, which
``SupervisedTrainer`` fires after ``loss.backward()`` and before the optimiser
step. Under AMP (``engine.amp`` and a ``GradScaler`` in ``engine.scaler``) it calls
``engine.scaler.unscale_(optimizer)`` first, so the bound applies to the true
gradients (as nnU-Net's ``train_step``: unscale, then clip); the scaler records
that it has unscaled, so the trainer's ``scaler.step`` does not unscale again,
and still skips the step when the unscaled gradients held inf or NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
from ignite.engine import Engine
from monai.engines.utils import IterationEvents

from mrisr.errors import InputError

__all__ = ["CLIP_MODES", "GradientClipping"]

#: Modes accepted by :class:`GradientClipping`.
CLIP_MODES = ("adjustable", "norm")


def _will_step(engine: Engine) -> bool:
    """Whether this iteration ends with an optimiser step (``SupervisedTrainer``'s gradient accumulation)."""
    acc = int(getattr(engine, "accumulation_steps", 1) or 1)
    if acc <= 1:
        return True
    epoch_length = engine.state.epoch_length
    if epoch_length is not None:
        local = (engine.state.iteration - 1) % epoch_length
        return (local + 1) % acc == 0 or (local + 1) == epoch_length
    return engine.state.iteration % acc == 0


def _already_unscaled(scaler: Any, optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``scaler.unscale_(optimizer)`` was already called since the last ``update()``."""
    states = getattr(scaler, "_per_optimizer_states", None)
    if not isinstance(states, Mapping) or id(optimizer) not in states:
        return False
    from torch.amp.grad_scaler import OptState

    return states[id(optimizer)].get("stage") is OptState.UNSCALED


class GradientClipping:
    """Clip gradients between ``backward()`` and the optimiser step.

    Args:
        mode: ``"adjustable"``: VDSR's adjustable clipping, every gradient element
            clipped to ``[-theta / lr, theta / lr]`` with the *current* learning rate
            of its optimiser parameter group (so the bound follows the schedule);
            ``"norm"``: ``torch.nn.utils.clip_grad_norm_`` with ``max_norm=theta`` over
            all parameters of the optimiser.
        theta: the clipping constant, > 0 (the protocol's ``train.clip_theta``).

    Call :meth:`attach` with a MONAI ``SupervisedTrainer`` (it uses ``engine.optimizer``,
    ``engine.amp`` and ``engine.scaler``). With gradient accumulation it clips only on
    the iterations that end with an optimiser step, once the gradients are complete.

    Raises:
        InputError: ``mode`` is not one of :data:`CLIP_MODES`, or ``theta`` is not a finite number > 0.
    """

    def __init__(self, mode: Literal["adjustable", "norm"], theta: float) -> None:
        if mode not in CLIP_MODES:
            raise InputError(f"unknown clipping mode {mode!r}", path="mode", fix=f"use one of {', '.join(CLIP_MODES)}")
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not math.isfinite(theta) or theta <= 0:
            raise InputError(f"{theta!r} is not a finite number > 0", path="theta", fix="give a positive clip constant")
        self.mode = mode
        self.theta = float(theta)

    def attach(self, engine: Engine) -> None:
        """Register on ``IterationEvents.BACKWARD_COMPLETED`` of ``engine``."""
        if getattr(engine, "optimizer", None) is None:
            raise InputError("the engine has no optimizer", path="engine", fix="attach to a MONAI SupervisedTrainer")
        if not engine.has_event_handler(self, IterationEvents.BACKWARD_COMPLETED):
            engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not _will_step(engine):
            return
        optimizer: torch.optim.Optimizer = engine.optimizer
        scaler = getattr(engine, "scaler", None)
        if getattr(engine, "amp", False) and scaler is not None and not _already_unscaled(scaler, optimizer):
            scaler.unscale_(optimizer)
        self.clip(optimizer)

    @torch.no_grad()
    def clip(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the gradients of ``optimizer``'s parameters in place (already unscaled)."""
        if self.mode == "norm":
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if params:
                torch.nn.utils.clip_grad_norm_(params, max_norm=self.theta)
            return
        for group in optimizer.param_groups:
            lr = float(group["lr"])
            if lr <= 0:  # no step is taken at lr 0: nothing to bound
                continue
            bound = self.theta / lr
            grads = [p.grad for p in group["params"] if p.grad is not None]
            for grad in grads:
                grad.clamp_(-bound, bound)
