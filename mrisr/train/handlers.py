"""Ignite handlers for MONAI's ``SupervisedTrainer``: gradient clipping and a CSV log.

:class:`GradientClipping` runs on ``IterationEvents.BACKWARD_COMPLETED``, which
``SupervisedTrainer`` fires after ``loss.backward()`` and before the optimiser
step. Under AMP (``engine.amp`` and a ``GradScaler`` in ``engine.scaler``) it calls
``engine.scaler.unscale_(optimizer)`` first, so the bound applies to the true
gradients (as nnU-Net's ``train_step``: unscale, then clip); the scaler records
that it has unscaled, so the trainer's ``scaler.step`` does not unscale again,
and still skips the step when the unscaled gradients held inf or NaN.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys

from mrisr.errors import InputError, OutputError

__all__ = ["CLIP_MODES", "GradientClipping", "TrainingCSVLogger"]

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


def _loss_of(output: Any) -> float | None:
    """The loss in a ``SupervisedTrainer`` output: a dict, or a list of dicts once decollated."""
    if isinstance(output, Mapping):
        loss = output.get(CommonKeys.LOSS)
    elif isinstance(output, Sequence) and output and isinstance(output[0], Mapping):
        loss = output[0].get(CommonKeys.LOSS)
    else:
        loss = output
    if isinstance(loss, torch.Tensor) and loss.numel() == 1:
        return float(loss.detach().item())
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        return float(loss)
    return None


class TrainingCSVLogger:
    """One CSV row per training epoch: ``epoch, iteration, loss, lr`` and validation metrics.

    ``loss`` is the mean training loss over the epoch's iterations, ``lr`` the
    learning rate of the first parameter group at the end of the epoch, and each
    name in ``metric_names`` is read from ``evaluator.state.metrics`` (empty when
    absent). An existing file is appended to (resume) and must have the same
    columns. Attach it after the validation handler so that the metrics are this
    epoch's (ignite runs handlers of one event in the order they were added).

    Args:
        path: the CSV file.
        metric_names: validation metrics to record, e.g. ``("psnr", "ssim")``.
        evaluator: the engine whose ``state.metrics`` holds them (optional).

    Raises:
        OutputError: an existing file whose header differs from these columns.
    """

    def __init__(self, path: str | Path, metric_names: Sequence[str] = (), evaluator: Engine | None = None) -> None:
        self.path = Path(path)
        self.columns = ["epoch", "iteration", "loss", "lr", *metric_names]
        self.metric_names = tuple(metric_names)
        self.evaluator = evaluator
        self._losses: list[float] = []

    def attach(self, engine: Engine) -> None:
        """Register on ``engine``'s ``EPOCH_STARTED``, ``ITERATION_COMPLETED`` and ``EPOCH_COMPLETED``."""
        self._check_header()
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _check_header(self) -> None:
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as f:
                header = next(csv.reader(f), [])
            if header != self.columns:
                raise OutputError(
                    f"has columns {header}, not {self.columns}",
                    path=self.path,
                    fix="resume with the same metrics, or write to a new run directory",
                )

    def _reset(self, engine: Engine) -> None:
        self._losses = []

    def _record(self, engine: Engine) -> None:
        loss = _loss_of(engine.state.output)
        if loss is not None:
            self._losses.append(loss)

    def _write(self, engine: Engine) -> None:
        optimizer = getattr(engine, "optimizer", None)
        lr = float(optimizer.param_groups[0]["lr"]) if optimizer is not None else ""
        loss = sum(self._losses) / len(self._losses) if self._losses else ""
        metrics = self.evaluator.state.metrics if self.evaluator is not None else {}
        row = [engine.state.epoch, engine.state.iteration, loss, lr]
        row += [_scalar(metrics.get(name, "")) for name in self.metric_names]
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(self.columns)
            writer.writerow(row)


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    return value
