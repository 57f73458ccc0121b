"""``train``: training through MONAI's SupervisedTrainer and SupervisedEvaluator, with handlers.

Every registered network trains here: the protocol's ``train.loss`` (MSE by default, L1, Charbonnier)
on pairs laid out for its upsampling kind (:mod:`mrisr.train.data`), summed over the levels of a
progressive network (LapSRN: deep supervision), with the protocol's gradient clipping.

A run directory holds everything about a run: ``protocol.json`` (the resolved protocol),
``metrics.csv``, TensorBoard events under ``tb/``, the best model (``best/model.safetensors``
and its card ``best/model.json``) and the state to resume from (``state/``: weights,
optimiser tensors as safetensors, counters as JSON — never pickle).

Each epoch draws its patches from a data stream seeded by ``(seed, epoch)``, so a run
resumed at an epoch boundary continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from .. import __version__
from ..device import resolve_device
from ..errors import InputError, OutputError
from ..evaluate.metrics import bbox_ssim, masked_psnr
from ..export.sidecar import json_ready, sha256_file
from ..infer.precision import channels_last, resolve_precision
from ..io.atomic import check_writable
from ..models.card import PERCEPTUAL_NOTE, save_checkpoint
from ..nets import level_scales, network_from_block, network_name
from ..preprocess import foreground_mask
from ..protocol import Protocol, load_protocol
from .adversarial import AdversarialStage, build_discriminator, load_or_train_features
from .data import PatchPairs, load_training_volumes, validation_pairs
from .gan import sharpness
from .handlers import GradientClipping
from .losses import multilevel_loss, pixel_loss
from .optim import build_optimizer, build_scheduler
from .precision import Bf16Inferer, LevelsInferer
from .validation import VolumeInferer

__all__ = ["train"]


def _distributed() -> tuple[int, int, bool]:
    """(rank, world size, whether we created the process group) under torchrun (``WORLD_SIZE`` > 1),
    initialising the group when needed: NCCL with CUDA, gloo on CPU. (0, 1, False) otherwise."""
    import os

    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), created


def _prepare(batch: dict, device: torch.device, non_blocking: bool = False, **kwargs: Any) -> tuple:
    return (batch["input"].to(device, non_blocking=non_blocking),
            batch["target"].to(device, non_blocking=non_blocking))


class _Run:
    """Paths of a run directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.protocol = root / "protocol.json"
        self.metrics = root / "metrics.csv"
        self.tb = root / "tb"
        self.best = root / "best"
        self.state = root / "state"


def _save_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> dict:
    """The optimiser's tensors to ``path`` (safetensors); returns the rest (layout, param groups) for JSON."""
    opt = optimizer.state_dict()
    tensors, layout = {}, {}
    for index, values in opt["state"].items():
        layout[str(index)] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
                layout[str(index)][key] = "tensor"
            else:
                layout[str(index)][key] = value
    save_file(tensors or {"_empty": torch.zeros(1)}, path)
    return {"optimizer_layout": layout, "param_groups": opt["param_groups"]}


def _load_optimizer(optimizer: torch.optim.Optimizer, path: Path, saved: dict, device: torch.device) -> None:
    tensors = load_file(path, device=str(device))
    opt_state = {}
    for index, values in saved["optimizer_layout"].items():
        opt_state[int(index)] = {
            key: tensors[f"{index}.{key}"] if value == "tensor" else value for key, value in values.items()
        }
    optimizer.load_state_dict({"state": opt_state, "param_groups": saved["param_groups"]})


def _save_weights(model: torch.nn.Module, path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, path)


def _save_state(run: _Run, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: Any, counters: dict, extra: dict[str, tuple[torch.nn.Module, Any]] | None = None) -> None:
    """Resume state as safetensors (weights, optimiser tensors) + JSON (everything else); ``extra``:
    further ``name -> (network, optimiser)`` pairs (the adversarial stage's discriminator)."""
    tmp = run.root / ".state.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _save_weights(model, tmp / "model.safetensors")
    saved = _save_optimizer(optimizer, tmp / "optimizer.safetensors")
    extras = {}
    for name, (net, opt) in (extra or {}).items():
        _save_weights(net, tmp / f"{name}.safetensors")
        extras[name] = _save_optimizer(opt, tmp / f"{name}_optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps({
        **counters,
        **saved,
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if not callable(v)},
        **({"extra": extras} if extras else {}),
    }, indent=1))
    old = run.root / ".state.old"
    shutil.rmtree(old, ignore_errors=True)
    if run.state.exists():
        run.state.rename(old)
    tmp.rename(run.state)
    shutil.rmtree(old, ignore_errors=True)


def _load_state(run: _Run, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                device: torch.device, extra: dict[str, tuple[torch.nn.Module, Any]] | None = None) -> dict:
    state = json.loads((run.state / "state.json").read_text())
    model.load_state_dict(load_file(run.state / "model.safetensors", device=str(device)))
    _load_optimizer(optimizer, run.state / "optimizer.safetensors", state, device)
    scheduler.load_state_dict(state["scheduler"])
    for name, (net, opt) in (extra or {}).items():
        if name not in state.get("extra", {}):
            raise InputError(f"the run's state has no {name} to resume", run.root,
                             "resume with the protocol the run started with (protocol.json)")
        net.load_state_dict(load_file(run.state / f"{name}.safetensors", device=str(device)))
        _load_optimizer(opt, run.state / f"{name}_optimizer.safetensors", state["extra"][name], device)
    state.pop("extra", None)
    return state


def train(
    protocol: Protocol | str | Path,
    data: Sequence[str | Path],
    out: str | Path,
    *,
    val: Sequence[str | Path] | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    max_cpu_seconds: float | None = None,
    device: str = "auto",
    resume: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    command: Sequence[str] | None = None,
    progress: bool = True,
    init: str | Path | None = None,
    precision: str = "auto",
) -> Path:
    """Train the protocol's network on simulated pairs from ``data``; returns the run directory.

    Args:
        protocol: a Protocol, a shipped name or a YAML path.
        data: high-resolution training volumes (files or folders; any format mrisr reads).
        out: the run directory (new, or existing with ``resume=True``).
        val: whole volumes validated at the protocol's nominal setting (PSNR/SSIM in the
            foreground); the best checkpoint is the best validation PSNR (else the last epoch).
        epochs: overrides ``train.epochs``. max_steps: stop after this many iterations.
        max_seconds: stop after this much wall time (a time budget, e.g. to compare methods).
        max_cpu_seconds: stop after this much CPU time of this process (all its threads; DataLoader
            workers not counted): a budget that other work on the machine does not shrink.
        device: ``auto``, ``cpu`` or ``cuda[:N]``; AMP and channels-last are used on CUDA.
        seed: model initialisation and data streams.
        num_workers: DataLoader workers preparing pairs on the CPU.
        init: a shipped model's name or a checkpoint (card, weights, folder or run folder) whose
            weights start the training (fine-tuning); its architecture must equal the protocol's
            network. Not with ``resume``.
        precision: the network's precision on the CPU, as for inference
            (:func:`mrisr.infer.precision.resolve_precision`): ``auto`` (bfloat16 autocast where
            the CPU has native bf16, else float32), ``float32`` or ``bfloat16``
            (:mod:`mrisr.train.precision`). Validation always scores in float32. The card records
            the choice under ``hardware.precision``. CUDA uses float16 AMP instead.
    """
    start_time = time.perf_counter()
    start_cpu = time.process_time()
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    rank, world, owns_group = _distributed()
    lead = rank == 0  # only rank 0 writes the run directory
    run = _Run(Path(out))
    if lead and run.root.exists() and any(run.root.iterdir()) and not resume:
        raise OutputError("run directory exists and is not empty", run.root, "pass --resume, or choose a new --out")
    if resume and not (run.state / "state.json").exists():
        raise InputError("no state to resume from", run.root, "start without --resume")
    if lead:
        check_writable(run.root, sources=[*data, *(val or [])], folder=True)  # read-only: before any loading
        run.root.mkdir(parents=True, exist_ok=True)
    if world > 1 and device == "auto" and torch.cuda.is_available():
        device = f"cuda:{rank % torch.cuda.device_count()}"
    dev = resolve_device(device)
    amp = dev.type == "cuda"
    chosen = resolve_precision(precision, dev)
    total_epochs = int(epochs if epochs is not None else proto.train.epochs)
    steps = int(proto.train.steps_per_epoch)

    volumes = load_training_volumes(data)
    val_pairs = validation_pairs(load_training_volumes(val), proto, seed) if val else []

    torch.manual_seed(seed)
    model = network_from_block(proto.network).to(dev)
    parent = _initialise(model, init, resume) if init is not None else None
    if amp or chosen == "bfloat16":
        model = model.to(memory_format=channels_last(proto.network.spatial_dims + 2))
    network = model
    if world > 1:  # DistributedDataParallel: gradients averaged over ranks, identical weights
        from torch.nn.parallel import DistributedDataParallel

        network = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    t = proto.train
    optimizer = build_optimizer(t.optimizer, model.parameters(), t.learning_rate, momentum=t.momentum,
                                weight_decay=t.weight_decay)
    scheduler = build_scheduler(t.lr_schedule, optimizer, epochs=total_epochs, steps_per_epoch=steps,
                                step_epochs=t.step_epochs, gamma=t.gamma)

    def loader(epoch: int) -> DataLoader:
        pairs = PatchPairs(volumes, proto, seed=seed, epoch=epoch, rank=rank, pairs_per_volume=t.pairs_per_volume,
                           foreground_bias=t.foreground_bias, strip_probability=t.strip_probability)
        return DataLoader(pairs, batch_size=t.batch_size, num_workers=num_workers)

    pixel = pixel_loss(t.loss)
    scales = level_scales(model)
    if len(scales) > 1:  # progressive: supervised at every level
        if world > 1:
            raise InputError("a progressive network (several output levels) trains in one process", "torchrun",
                             "run it without torchrun")

        def loss_function(outputs: list[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
            return multilevel_loss(outputs, target, scales, pixel)

        inferer: Any = LevelsInferer(bf16=chosen == "bfloat16")
    else:
        loss_function, inferer = pixel, Bf16Inferer() if chosen == "bfloat16" else None
    clipping = GradientClipping(t.clip_mode, t.clip_theta)
    stage = None
    if t.adversarial is not None:
        stage = _adversarial_stage(proto, volumes, run, seed, dev, chosen, len(scales), world, lead, clipping)
        loss_function = stage
    trainer = SupervisedTrainer(
        device=dev, max_epochs=total_epochs, train_data_loader=loader(0), network=network, optimizer=optimizer,
        loss_function=loss_function, epoch_length=steps, prepare_batch=_prepare, amp=amp, decollate=False,
        inferer=inferer,
    )
    clipping.attach(trainer)
    if stage is not None:
        stage.attach(trainer)
    extra = {"discriminator": (stage.discriminator, stage.optimizer)} if stage is not None else None

    counters: dict[str, Any] = {"epoch": 0, "iteration": 0, "best_psnr": -math.inf, "best_epoch": 0}
    if resume:
        counters = _load_state(run, model, optimizer, scheduler, dev, extra)
        trainer.state.epoch = counters["epoch"]
        trainer.state.iteration = counters["iteration"]
    elif lead:
        run.protocol.write_text(json.dumps(proto.as_dict(), indent=1, default=str))

    @trainer.on(Events.EPOCH_STARTED)
    def _fresh_stream(engine: SupervisedTrainer) -> None:
        engine.set_data(loader(engine.state.epoch - 1))

    @trainer.on(Events.ITERATION_COMPLETED)
    def _step_schedule(engine: SupervisedTrainer) -> None:
        scheduler.step()
        if max_steps is not None and engine.state.iteration >= max_steps:
            engine.terminate()
        if max_seconds is not None and time.perf_counter() - start_time >= max_seconds:
            engine.terminate()
        if max_cpu_seconds is not None and time.process_time() - start_cpu >= max_cpu_seconds:
            engine.terminate()

    losses: list[float] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _collect(engine: SupervisedTrainer) -> None:
        output = engine.state.output[0] if isinstance(engine.state.output, list) else engine.state.output
        losses.append(float(output["loss"].detach()))

    writer = _tensorboard(run.tb) if lead else None
    evaluator = _evaluator(model, val_pairs, proto, dev, stage is not None) if val_pairs and lead else None

    @trainer.on(Events.EPOCH_COMPLETED)
    def _epoch_end(engine: SupervisedTrainer) -> None:
        epoch = engine.state.epoch
        if not lead:
            losses.clear()
            return
        row: dict[str, Any] = {"epoch": epoch, "iteration": engine.state.iteration,
                               "loss": sum(losses) / max(1, len(losses)), "lr": optimizer.param_groups[0]["lr"],
                               "seconds": round(time.perf_counter() - start_time, 2)}
        losses.clear()
        if stage is not None:
            row.update(stage.epoch_means())
        if val_pairs and epoch % t.val_interval == 0:
            row.update(_validate(evaluator))
        if not val_pairs or stage is not None:
            # no validation: the last epoch is the best; adversarial: PSNR would pick the least
            # adversarial epoch (the pixel-loss start), so the last one is kept and its scores recorded
            improved = True
        elif "val_psnr" in row:
            improved = row["val_psnr"] > counters["best_psnr"]
        else:  # between validations: only a placeholder until the first one
            improved = counters["best_epoch"] == 0
        if improved:
            counters["best_psnr"] = row.get("val_psnr", counters["best_psnr"])
            counters["best_epoch"] = epoch
            card = _card(proto, data, volumes, row, start_time, command, dev, chosen, start_cpu)
            if parent is not None:
                card["initialised_from"] = parent
            if stage is not None:
                card.update(_perceptual_card(proto, stage))
            save_checkpoint(model, run.best, card, name="model", force=True)
        _append_csv(run.metrics, row)
        if writer is not None:
            for key, value in row.items():
                if key not in ("epoch", "iteration"):
                    writer.add_scalar(key, value, epoch)
            writer.flush()
        counters.update(epoch=epoch, iteration=engine.state.iteration)
        _save_state(run, model, optimizer, scheduler, counters, extra)

    @trainer.on(Events.TERMINATE)
    def _stopped_mid_epoch(engine: SupervisedTrainer) -> None:  # --max-steps: still save and log
        if losses:
            _epoch_end(engine)

    if progress and lead:
        from ignite.handlers import ProgressBar

        ProgressBar(persist=False).attach(trainer, output_transform=lambda out: {
            "loss": (out[0] if isinstance(out, list) else out)["loss"].item()})
    trainer.run()
    if writer is not None:
        writer.close()
    if world > 1:
        import hashlib

        import torch.distributed as dist

        # DDP keeps the ranks' weights identical; record each rank's digest so that it can be checked
        digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters()))
        digests: list[Any] = [None] * world
        dist.all_gather_object(digests, digest.hexdigest())
        if lead:
            (run.root / "ranks.json").write_text(json.dumps({"world_size": world, "weight_sha256": digests}))
        dist.barrier()  # every rank returns once rank 0 has written the run directory
        if owns_group:  # an undestroyed gloo group can abort the process at interpreter exit
            dist.destroy_process_group()
    return run.root


def _evaluator(model: torch.nn.Module, pairs: list[dict], proto: Protocol, device: torch.device,
               sharp: bool = False) -> Any:
    """MONAI's SupervisedEvaluator over whole validation volumes, scoring PSNR/SSIM in the foreground
    (and, with ``sharp``, :func:`mrisr.train.gan.sharpness` of the prediction and of the reference)."""
    from monai.engines import SupervisedEvaluator

    def prepare(batch: dict, device: torch.device, non_blocking: bool = False, **kwargs: Any) -> tuple:
        # whole volumes stay on the CPU: the inferer moves planes or windows to the device itself
        return batch["input"][None], batch["target"][None], (), {"slice_axis": int(batch["slice_axis"]),
                                                                 "target_shape": tuple(batch["target"].shape[1:])}

    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=pairs, network=model, prepare_batch=prepare, decollate=False,
        inferer=VolumeInferer(proto.network.spatial_dims, proto.train.patch_size, device),
    )
    evaluator.scores = {"val_psnr": [], "val_ssim": [], **({"val_sharpness": [], "ref_sharpness": []} if sharp else {})}

    @evaluator.on(Events.ITERATION_COMPLETED)
    def _score(engine: Any) -> None:
        prediction, target = engine.state.output["pred"][0], engine.state.output["label"][0]
        mask = foreground_mask(target)
        engine.scores["val_psnr"].append(masked_psnr(prediction, target, mask))
        engine.scores["val_ssim"].append(bbox_ssim(prediction, target, mask))
        if sharp:
            engine.scores["val_sharpness"].append(sharpness(prediction[0]))
            engine.scores["ref_sharpness"].append(sharpness(target[0]))

    return evaluator


def _validate(evaluator: Any) -> dict:
    for values in evaluator.scores.values():
        values.clear()
    evaluator.run()
    return {key: sum(values) / len(values) for key, values in evaluator.scores.items()}


#: metrics.csv columns; validation columns stay empty on epochs without validation.
#: The adversarial stage adds the discriminator's loss and mean D(hr)/D(sr), the generator's unweighted
#: terms and the validation volumes' sharpness (prediction and reference).
METRIC_FIELDS = ("epoch", "iteration", "loss", "lr", "seconds", "val_psnr", "val_ssim", "d_loss", "d_real", "d_fake",
                 "g_pixel", "g_perceptual", "g_adversarial", "val_sharpness", "ref_sharpness")


def _append_csv(path: Path, row: dict) -> None:
    """Append ``row`` under the fixed header :data:`METRIC_FIELDS` (written with the first row; a file
    started by an older mrisr keeps its own header)."""
    exists = path.exists()
    fields = METRIC_FIELDS
    if exists:
        with open(path, newline="") as fh:
            fields = tuple(next(csv.reader(fh), METRIC_FIELDS))
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="", extrasaction="ignore")
        if not exists:
            writer.writeheader()
        writer.writerow(row)


def _tensorboard(folder: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency; a broken install only loses the events
        return None
    return SummaryWriter(log_dir=str(folder))


def _initialise(model: torch.nn.Module, init: str | Path, resume: bool) -> dict:
    """Copy a checkpoint's weights into ``model`` (same architecture); its path and sha256."""
    if resume:
        raise InputError("init and resume both given", init, "resume continues a run; init starts a new one")
    from ..models.loaded import load_model  # names of shipped models and run folders too

    loaded = load_model(init, "cpu")
    source, card = loaded.net, loaded.card
    ours = json.loads(json.dumps(json_ready({"name": network_name(model), "config": dict(model.config)})))
    theirs = card["architecture"]
    if theirs != ours:
        raise InputError(f"checkpoint architecture {theirs} differs from the protocol's network {ours}", init,
                         "give a checkpoint trained with the same network block, or change the protocol's network")
    model.load_state_dict(source.state_dict())
    return {"path": str(init), "weights_sha256": card["weights"]["sha256"], "name": card.get("name")}


def _card(proto: Protocol, data: Sequence[str | Path], volumes: list, metrics: dict, start: float,
          command: Sequence[str] | None, device: torch.device, precision: str, start_cpu: float = 0.0) -> dict:
    files = [Path(p) for p in data]
    return {
        # the whole protocol, as shipped cards hold it: inference reads the training patch size from it
        "protocol": {**proto.as_dict(), "path": proto.source},
        "training_data": [{"path": str(p), "sha256": sha256_file(p)} for p in files if p.exists()],
        "metrics": metrics,
        "mrisr_version": __version__,
        "hardware": {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda"
                     else None, "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                     "precision": "float16 amp" if device.type == "cuda" else precision},
        "wall_time_s": round(time.perf_counter() - start, 1),
        "cpu_time_s": round(time.process_time() - start_cpu, 1),  # this process, all threads (this session)
        "command": list(command) if command is not None else sys.argv,
    }


def _adversarial_stage(proto: Protocol, volumes: list, run: _Run, seed: int, device: torch.device, precision: str,
                       levels: int, world: int, lead: bool, clipping: GradientClipping) -> AdversarialStage:
    """The protocol's SRGAN stage: its discriminator (seeded by ``seed``) and the run's feature network."""
    where = proto.source or proto.name
    if levels > 1:
        raise InputError("train.adversarial needs a network with one output; a progressive network has several",
                         where, "use SRResNet (protocols/srgan-thick-x4.yaml) or another single-output network")
    if world > 1:
        raise InputError("train.adversarial trains in one process (the discriminator is not distributed)", "torchrun",
                         "run it without torchrun")
    block = proto.train.adversarial
    assert block is not None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)  # its own draw: the generator's initialisation stays that of a pixel-loss run
        discriminator = build_discriminator(block, proto.network.spatial_dims).to(device)
    bf16 = precision == "bfloat16"
    if bf16:
        discriminator = discriminator.to(memory_format=channels_last(proto.network.spatial_dims + 2))
    features, record = load_or_train_features(run.root / "perceptual", volumes, proto, seed, device, write=lead)
    return AdversarialStage(block, discriminator, features, proto.train.loss, clipping, bf16=bf16,
                            feature_record=record)


def _perceptual_card(proto: Protocol, stage: AdversarialStage) -> dict:
    """The card's flag and record of an adversarially trained model."""
    block = proto.train.adversarial
    assert block is not None
    return {
        "perceptual": True,
        "perceptual_note": PERCEPTUAL_NOTE,
        "adversarial": {"weights": {"pixel": block.w_pixel, "perceptual": block.w_perceptual,
                                    "adversarial": block.w_adversarial},
                        "start_iteration": block.start_iteration,
                        "discriminator": dict(stage.discriminator.config),
                        "feature_net": stage.feature_record},
    }

