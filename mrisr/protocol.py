"""Acquisition protocols: typed, validated, plain data.

A protocol file (``protocols/*.yaml``) reads like a scanner's protocol card. It is
loaded with ``yaml.safe_load`` (no code, no expressions) and validated into the frozen
dataclasses below: unknown keys, wrong types and out-of-range values raise a
:class:`~mrisr.errors.ProtocolError` that names the key path (``acquisition.slice.thickness_mm``).

Physical parameters are :class:`Param`: a ``nominal`` value (the fixed setting used for
evaluation) and a training ``range`` sampled uniformly; a plain number means a fixed value.
:meth:`Acquisition.nominal` and :meth:`Acquisition.sample` turn the block into concrete
:class:`AcquisitionParams` for :func:`mrisr.kspace.degrade`.
"""

from __future__ import annotations

import difflib
import math
import sys
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import torch
import yaml

from .errors import ProtocolError

__all__ = [
    "Param",
    "SliceBlock",
    "InPlaneBlock",
    "NoiseBlock",
    "MotionBlock",
    "UndersamplingBlock",
    "Acquisition",
    "AcquisitionParams",
    "Protocol",
    "load_protocol",
    "list_protocols",
    "protocol_dirs",
    "SCHEMA_VERSION",
]

#: The protocol format this code reads.
SCHEMA_VERSION = 1

Orientation = Literal["axial", "coronal", "sagittal"]
PhaseEncode = Literal["AP", "LR", "SI"]
ProfileName = Literal["rect", "gaussian", "sinc"]


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    if low == high:
        return float(low)
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    return low + (high - low) * u


@dataclass(frozen=True)
class Param:
    """A physical parameter: ``nominal`` for evaluation, ``range`` (low, high) for training.

    In YAML: a number (fixed, ``range = (v, v)``) or ``{nominal: v, range: [low, high]}``.
    ``.inf`` is allowed where a parameter says so (SNR: noise-free).
    """

    nominal: float
    range: tuple[float, float]

    def sample(self, generator: torch.Generator) -> float:
        """A uniform draw from ``range`` (the nominal value when the range is a point)."""
        return _uniform(self.range[0], self.range[1], generator)

    def check(self, path: str, low: float, high: float, *, low_open: bool = False) -> None:
        """Every value within ``[low, high]`` (``(low, high]`` with ``low_open``)."""
        for value, where in ((self.nominal, "nominal"), (self.range[0], "range"), (self.range[1], "range")):
            below = value <= low if low_open else value < low
            if math.isnan(value) or below or value > high:
                bracket = "(" if low_open else "["
                raise ProtocolError(
                    f"{path}.{where}: {value} is outside {bracket}{low}, {high}]", fix="give a value in that interval"
                )
        if self.range[0] > self.range[1] or not self.range[0] <= self.nominal <= self.range[1]:
            raise ProtocolError(
                f"{path}: nominal {self.nominal} must lie in range [{self.range[0]}, {self.range[1]}] (low <= high)",
                fix="widen the range or move the nominal value",
            )


@dataclass(frozen=True)
class SliceBlock:
    """Through-plane: slice profile, thickness and gap (spacing = thickness + gap), in mm.

    ``scale`` instead of ``thickness_mm``/``gap_mm`` makes thickness and spacing a multiple
    of the input's spacing along the slice axis (``thick-slice-x4``). ``profile`` may be a
    list: training draws one, the first is nominal.
    """

    profile: ProfileName | tuple[ProfileName, ...] = "gaussian"
    thickness_mm: Param | None = None
    gap_mm: Param | None = None
    scale: Param | None = None

    def validate(self, path: str) -> None:
        if not self.profiles:
            raise ProtocolError(f"{path}.profile: an empty list", fix="name at least one profile")
        if (self.scale is None) == (self.thickness_mm is None):
            raise ProtocolError(
                f"{path}: give either thickness_mm (with an optional gap_mm) or scale, not both or neither",
                fix="set thickness_mm for a clinical protocol, or scale for a relative one",
            )
        if self.scale is not None:
            if self.gap_mm is not None:
                raise ProtocolError(f"{path}.gap_mm: not allowed with scale", fix="drop gap_mm or use thickness_mm")
            self.scale.check(f"{path}.scale", 1.0, 64.0)
        else:
            assert self.thickness_mm is not None
            self.thickness_mm.check(f"{path}.thickness_mm", 0.0, 100.0, low_open=True)
            if self.gap_mm is not None:
                self.gap_mm.check(f"{path}.gap_mm", -0.9 * self.thickness_mm.range[0], 100.0)

    @property
    def profiles(self) -> tuple[ProfileName, ...]:
        return self.profile if isinstance(self.profile, tuple) else (self.profile,)


@dataclass(frozen=True)
class InPlaneBlock:
    """In-plane: the acquired spacing (mm, both in-plane axes), the scanner's k-space window
    and whether the image comes back on the acquired grid or zero-filled to the input grid."""

    spacing_mm: Param
    window: Literal["none", "hamming", "tukey"] = "none"
    reconstruction: Literal["acquired", "zerofilled"] = "zerofilled"

    def validate(self, path: str) -> None:
        self.spacing_mm.check(f"{path}.spacing_mm", 0.0, 20.0, low_open=True)


@dataclass(frozen=True)
class NoiseBlock:
    """Complex Gaussian noise at a signal-to-noise ratio (signal: the foreground mean).
    ``.inf`` is noise-free; training draws 1/SNR uniformly between the range's ends."""

    snr: Param

    def validate(self, path: str) -> None:
        self.snr.check(f"{path}.snr", 0.0, math.inf, low_open=True)

    def sample(self, generator: torch.Generator) -> float:
        inv = _uniform(1.0 / self.snr.range[1], 1.0 / self.snr.range[0], generator)
        return math.inf if inv == 0.0 else 1.0 / inv


@dataclass(frozen=True)
class MotionBlock:
    """Rigid motion between k-space segments along the phase-encode axis (ghosting).
    Training applies it with ``probability``; the nominal setting uses the nominal values."""

    segments: int = 8
    max_translation_mm: Param = field(default_factory=lambda: Param(0.0, (0.0, 0.0)))
    max_rotation_deg: Param = field(default_factory=lambda: Param(0.0, (0.0, 0.0)))
    probability: float = 1.0

    def validate(self, path: str) -> None:
        if not 1 <= self.segments <= 64:
            raise ProtocolError(f"{path}.segments: {self.segments} is outside [1, 64]", fix="give a shot count")
        if not 0.0 <= self.probability <= 1.0:
            raise ProtocolError(f"{path}.probability: {self.probability} is outside [0, 1]", fix="give a probability")
        self.max_translation_mm.check(f"{path}.max_translation_mm", 0.0, 50.0)
        self.max_rotation_deg.check(f"{path}.max_rotation_deg", 0.0, 45.0)


@dataclass(frozen=True)
class UndersamplingBlock:
    """Cartesian undersampling along the phase-encode axis with a fully sampled centre."""

    acceleration: Param
    center_fraction: float = 0.08
    kind: Literal["random", "equispaced"] = "equispaced"

    def validate(self, path: str) -> None:
        self.acceleration.check(f"{path}.acceleration", 1.0, 16.0)
        most = 1.0 / self.acceleration.range[1]
        if not 0.0 < self.center_fraction <= most:
            raise ProtocolError(
                f"{path}.center_fraction: {self.center_fraction} is outside (0, {most:g}]: the fully sampled"
                f" centre must fit in the lines acquired at acceleration {self.acceleration.range[1]:g}",
                fix="lower center_fraction or the acceleration range",
            )


@dataclass(frozen=True)
class AcquisitionParams:
    """One concrete acquisition, drawn from an :class:`Acquisition` block (all lengths in mm).

    ``thickness_mm``/``slice_spacing_mm`` are None when ``slice_scale`` (a multiple of
    the input spacing) is used instead. ``snr`` is ``inf`` for no noise; ``motion_*`` are
    zero for no motion; ``in_plane_spacing_mm`` None for no in-plane loss.
    """

    orientation: Orientation
    phase_encode: PhaseEncode
    profile: ProfileName
    thickness_mm: float | None
    slice_spacing_mm: float | None
    slice_scale: float | None
    in_plane_spacing_mm: float | None
    window: str
    reconstruction: str
    partial_fourier: float
    snr: float
    motion_segments: int
    motion_translation_mm: float
    motion_rotation_deg: float
    acceleration: float
    center_fraction: float
    undersampling_kind: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``inf`` becomes the string ``"inf"``)."""
        return {k: ("inf" if isinstance(v, float) and math.isinf(v) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Acquisition:
    """The simulated low-resolution acquisition (the ``acquisition`` block)."""

    orientation: Orientation
    slice: SliceBlock
    phase_encode: PhaseEncode = "AP"
    in_plane: InPlaneBlock | None = None
    partial_fourier: Param | None = None
    noise: NoiseBlock | None = None
    motion: MotionBlock | None = None
    undersampling: UndersamplingBlock | None = None

    def validate(self, path: str) -> None:
        normal = {"axial": "SI", "coronal": "AP", "sagittal": "LR"}[self.orientation]
        if self.phase_encode == normal:
            raise ProtocolError(
                f"{path}.phase_encode: {self.phase_encode} is the slice direction of a {self.orientation} acquisition",
                fix="choose an in-plane direction",
            )
        self.slice.validate(f"{path}.slice")
        for name in ("in_plane", "noise", "motion", "undersampling"):
            block = getattr(self, name)
            if block is not None:
                block.validate(f"{path}.{name}")
        if self.partial_fourier is not None:
            self.partial_fourier.check(f"{path}.partial_fourier", 0.5, 1.0)

    def _params(self, pick: typing.Callable[[Param], float], profile: ProfileName, snr: float,
                moving: bool) -> AcquisitionParams:
        s = self.slice
        thickness = pick(s.thickness_mm) if s.thickness_mm is not None else None
        gap = pick(s.gap_mm) if s.gap_mm is not None else 0.0
        return AcquisitionParams(
            orientation=self.orientation,
            phase_encode=self.phase_encode,
            profile=profile,
            thickness_mm=thickness,
            slice_spacing_mm=None if thickness is None else thickness + gap,
            slice_scale=pick(s.scale) if s.scale is not None else None,
            in_plane_spacing_mm=pick(self.in_plane.spacing_mm) if self.in_plane else None,
            window=self.in_plane.window if self.in_plane else "none",
            reconstruction=self.in_plane.reconstruction if self.in_plane else "zerofilled",
            partial_fourier=pick(self.partial_fourier) if self.partial_fourier else 1.0,
            snr=snr,
            motion_segments=self.motion.segments if self.motion else 1,
            motion_translation_mm=pick(self.motion.max_translation_mm) if self.motion and moving else 0.0,
            motion_rotation_deg=pick(self.motion.max_rotation_deg) if self.motion and moving else 0.0,
            acceleration=pick(self.undersampling.acceleration) if self.undersampling else 1.0,
            center_fraction=self.undersampling.center_fraction if self.undersampling else 1.0,
            undersampling_kind=self.undersampling.kind if self.undersampling else "equispaced",
        )

    def nominal(self) -> AcquisitionParams:
        """The fixed evaluation setting: every nominal value, the first profile."""
        snr = self.noise.snr.nominal if self.noise else math.inf
        return self._params(lambda p: p.nominal, self.slice.profiles[0], snr, moving=True)

    def sample(self, generator: torch.Generator) -> AcquisitionParams:
        """A training draw: uniform within each range, one of the profiles, motion with its probability."""
        profiles = self.slice.profiles
        profile = profiles[int(torch.randint(len(profiles), (), generator=generator))]
        snr = self.noise.sample(generator) if self.noise else math.inf
        moving = self.motion is not None and _uniform(0.0, 1.0, generator) < self.motion.probability
        return self._params(lambda p: p.sample(generator), profile, snr, moving)


def _positive(path: str, **values: float) -> None:
    for key, value in values.items():
        if not value > 0 or math.isinf(value):
            raise ProtocolError(f"{path}.{key}: {value!r} must be a positive finite number", fix="give one")


@dataclass(frozen=True)
class NetworkBlock:
    """The network a model for this protocol uses (see :mod:`mrisr.nets`).

    ``features`` (one width, or one per layer where the network takes a list), ``depth`` and
    ``scale`` are the common arguments (left out: the network's own defaults); ``options`` holds
    any other constructor argument of the named network (checked against its signature when the
    network is built). ``scale`` is the integer factor of a
    post-upsampling network: one value (the coarse axis) or one per patch axis, coarse last.
    """

    name: str = "vdsr"
    spatial_dims: Literal[2, 3] = 2
    features: int | tuple[int, ...] | None = None
    depth: int | None = None
    scale: int | tuple[int, ...] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self, path: str) -> None:
        if not self.name.strip():
            raise ProtocolError(f"{path}.name: empty", fix="name the network (mrisr.nets.NETWORKS lists them)")
        for key in ("features", "depth"):
            value = getattr(self, key)
            values = value if isinstance(value, tuple) else () if value is None else (value,)
            if any(v <= 0 for v in values) or value == ():
                raise ProtocolError(f"{path}.{key}: {value!r} must be positive integers", fix="give them")
        factors = (self.scale,) if isinstance(self.scale, int) else self.scale or ()
        if any(f < 1 for f in factors) or (factors and math.prod(factors) < 2):
            raise ProtocolError(f"{path}.scale: {self.scale!r} must be integers >= 1 that upsample some axis",
                                fix="give e.g. 4 (the coarse axis) or [1, 4]")
        clash = sorted(set(self.options) & {"name", "spatial_dims", "features", "depth", "scale"})
        if clash:
            raise ProtocolError(f"{path}.options.{clash[0]}: give it as {path}.{clash[0]}", fix="move it up")


@dataclass(frozen=True)
class AdversarialBlock:
    """SRGAN's adversarial stage (``train.adversarial``; :mod:`mrisr.train.adversarial`).

    The generator's loss is ``w_pixel * pixel + w_perceptual * perceptual + w_adversarial * -log D(sr)``
    (:func:`mrisr.train.gan.srgan_generator_loss`; ``train.loss`` names the pixel term). Until iteration
    ``start_iteration`` the generator trains on the pixel term alone and the discriminator rests (the
    paper's SRResNet-MSE pretraining; or start from a trained generator with ``init``). The perceptual
    feature network is trained on the run's own training volumes first (``feature_steps`` denoising
    steps, :func:`mrisr.nets.srgan.train_feature_net`), never downloaded. The discriminator
    (:class:`mrisr.nets.srgan.Discriminator`) takes one Adam step per iteration at ``discriminator_lr``
    (betas 0.9, 0.999 as the paper), clipped as the generator (``train.clip_mode``/``clip_theta``).
    Models trained so are flagged perceptual in their card and in every sidecar.
    """

    start_iteration: int = 0
    w_pixel: float = 1.0
    w_perceptual: float = 1.0
    w_adversarial: float = 1e-3
    discriminator_features: int = 64
    discriminator_dense: int = 1024
    discriminator_norm: Literal["batch", "instance", "none"] = "batch"
    discriminator_lr: float = 1e-4
    feature_widths: tuple[int, ...] = (32, 64, 128)
    feature_steps: int = 1000

    def validate(self, path: str) -> None:
        if self.start_iteration < 0 or self.feature_steps < 1:
            raise ProtocolError(f"{path}: start_iteration must be >= 0 and feature_steps >= 1",
                                fix="give e.g. start_iteration: 0, feature_steps: 1000")
        for key in ("w_pixel", "w_perceptual", "w_adversarial"):
            if not 0.0 <= getattr(self, key) < math.inf:
                raise ProtocolError(f"{path}.{key}: {getattr(self, key)} must be a finite number >= 0", fix="give one")
        if self.w_pixel + self.w_perceptual + self.w_adversarial == 0:
            raise ProtocolError(f"{path}: every loss weight is 0", fix="give w_pixel: 1.0 (and the others)")
        _positive(path, discriminator_features=self.discriminator_features,
                  discriminator_dense=self.discriminator_dense, discriminator_lr=self.discriminator_lr)
        if not self.feature_widths or any(w <= 0 for w in self.feature_widths):
            raise ProtocolError(f"{path}.feature_widths: {list(self.feature_widths)} must be positive widths",
                                fix="give e.g. [32, 64, 128]")


@dataclass(frozen=True)
class TrainBlock:
    """Training settings: patches, batches, optimiser and VDSR's adjustable gradient clipping."""

    patch_size: tuple[int, ...] = (64, 64)
    batch_size: int = 16
    epochs: int = 80
    steps_per_epoch: int = 100
    optimizer: Literal["sgd", "adam"] = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_schedule: Literal["step", "cosine"] = "step"
    step_epochs: int = 20
    gamma: float = 0.1
    #: pixel loss: mse (VDSR), l1, or charbonnier (LapSRN; summed over its levels for progressive networks)
    loss: Literal["mse", "l1", "charbonnier"] = "mse"
    clip_mode: Literal["adjustable", "norm"] = "adjustable"
    clip_theta: float = 0.01
    pairs_per_volume: int = 32
    foreground_bias: float = 0.9
    #: share of simulated acquisitions made from a brain-masked copy of the HR volume
    #: (zero outside a smoothed intensity threshold): teaches the sharp edge of skull-stripped data
    strip_probability: float = 0.0
    val_interval: int = 1
    #: SRGAN's adversarial stage (None: the pixel loss alone)
    adversarial: AdversarialBlock | None = None

    def validate(self, path: str) -> None:
        if self.adversarial is not None:
            self.adversarial.validate(f"{path}.adversarial")
        if not self.patch_size or any(p <= 0 for p in self.patch_size):
            raise ProtocolError(f"{path}.patch_size: {list(self.patch_size)} must be positive sizes", fix="give them")
        _positive(path, batch_size=self.batch_size, epochs=self.epochs, learning_rate=self.learning_rate,
                  clip_theta=self.clip_theta, steps_per_epoch=self.steps_per_epoch, step_epochs=self.step_epochs,
                  gamma=self.gamma, pairs_per_volume=self.pairs_per_volume, val_interval=self.val_interval)
        for key in ("momentum", "weight_decay", "foreground_bias", "strip_probability"):
            value = getattr(self, key)
            if not 0.0 <= value <= 1.0:
                raise ProtocolError(f"{path}.{key}: {value} is outside [0, 1]", fix="give a fraction")


@dataclass(frozen=True)
class InferenceBlock:
    """Inference: the target spacing (mm; None = isotropic at the finest input spacing)
    and sliding-window overlap."""

    spacing_mm: float | None = None
    overlap: float = 0.25

    def validate(self, path: str) -> None:
        if self.spacing_mm is not None:
            _positive(path, spacing_mm=self.spacing_mm)
        if not 0.0 <= self.overlap < 1.0:
            raise ProtocolError(f"{path}.overlap: {self.overlap} is outside [0, 1)", fix="give a fraction")


@dataclass(frozen=True)
class ExportBlock:
    """Formats written by default besides the input's own."""

    formats: tuple[Literal["nifti", "nrrd", "dicom", "mha"], ...] = ("nifti",)

    def validate(self, path: str) -> None:
        if not self.formats:
            raise ProtocolError(f"{path}.formats: an empty list", fix="name at least one format")


@dataclass(frozen=True)
class Protocol:
    """A whole protocol card."""

    schema_version: int
    name: str
    description: str
    acquisition: Acquisition
    network: NetworkBlock = field(default_factory=NetworkBlock)
    train: TrainBlock = field(default_factory=TrainBlock)
    inference: InferenceBlock = field(default_factory=InferenceBlock)
    export: ExportBlock = field(default_factory=ExportBlock)
    source: str = ""

    def validate(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise ProtocolError(
                f"schema_version: {self.schema_version} is not supported (this mrisr reads {SCHEMA_VERSION})",
                fix="update mrisr or the protocol file",
            )
        self.acquisition.validate("acquisition")
        for name in ("network", "train", "inference", "export"):
            getattr(self, name).validate(name)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _build(tp: Any, value: Any, path: str) -> Any:
    """``value`` (from YAML) as type ``tp``, or a ProtocolError naming ``path``."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return _build(option, value, path)
            except ProtocolError as exc:
                errors.append(exc.problem)
        raise ProtocolError(errors[-1] if len(errors) == 1 else f"{path}: {value!r} fits none of the allowed forms",
                            fix="see protocols/README.md for the format")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ProtocolError(f"{path}: {value!r} is not one of {', '.join(map(repr, allowed))}",
                                fix="use one of those values")
        return value
    if origin is tuple:
        args = get_args(tp)
        if not isinstance(value, list):
            raise ProtocolError(f"{path}: expected a list, got {value!r}", fix="write it as [a, b, ...]")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ProtocolError(f"{path}: expected {len(args)} values, got {len(value)}", fix="fix the list length")
        return tuple(_build(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ProtocolError(f"{path}: expected a mapping of names to values, got {value!r}",
                                fix="write it as {key: value, ...}")
        return {k: _plain(v, f"{path}.{k}") for k, v in value.items()}
    if tp is Param:
        return _param(value, path)
    if is_dataclass(tp):
        return _dataclass(tp, value, path)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"{path}: expected a number, got {value!r}", fix="write a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"{path}: expected an integer, got {value!r}", fix="write a whole number")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ProtocolError(f"{path}: expected text, got {value!r}", fix="write text")
        return value
    raise ProtocolError(f"{path}: unsupported type {_type_name(tp)}")  # pragma: no cover - a bug in a dataclass


def _plain(value: Any, path: str) -> Any:
    """A free-form option value: a number, text, a boolean, null, or a list of those (nested)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    raise ProtocolError(f"{path}: {value!r} is not a number, text, boolean or list", fix="give a plain value")


def _param(value: Any, path: str) -> Param:
    if isinstance(value, dict):
        unknown = set(value) - {"nominal", "range"}
        if unknown or "nominal" not in value:
            key = sorted(unknown)[0] if unknown else "nominal"
            problem = "unknown key (allowed: nominal, range)" if unknown else "missing key"
            raise ProtocolError(f"{path}.{key}: {problem}", fix="write {nominal: v, range: [low, high]}")
        nominal = _build(float, value["nominal"], f"{path}.nominal")
        low, high = _build(tuple[float, float], value.get("range", [nominal, nominal]), f"{path}.range")
        return Param(nominal, (low, high))
    number = _build(float, value, path)
    return Param(number, (number, number))


def _dataclass(cls: type, value: Any, path: str) -> Any:
    if not isinstance(value, dict):
        raise ProtocolError(f"{path or 'protocol'}: expected a mapping of keys, got {value!r}",
                            fix="write the block as key: value lines")
    hints = get_type_hints(cls, globalns=vars(sys.modules[__name__]))
    names = [f.name for f in fields(cls) if f.name != "source"]
    for key in value:
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            raise ProtocolError(f"{where}: unknown key (allowed: {', '.join(names)})", fix="remove or rename it")
    kwargs = {}
    for f in fields(cls):
        if f.name == "source":
            continue
        where = f"{path}.{f.name}" if path else f.name
        if f.name in value:
            kwargs[f.name] = _build(hints[f.name], value[f.name], where)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ProtocolError(f"{where}: missing key", fix=f"add {f.name} to the protocol")
    return cls(**kwargs)


# --------------------------------------------------------------------------- finding files


def protocol_dirs() -> list[Path]:
    """Where shipped protocols live: the source tree's ``protocols/`` (editable installs)
    and ``<prefix>/share/mrisr/protocols`` (wheel installs)."""
    here = Path(__file__).resolve().parent
    return [d for d in (here.parent / "protocols", Path(sys.prefix) / "share" / "mrisr" / "protocols") if d.is_dir()]


def list_protocols() -> list[Protocol]:
    """Every shipped protocol, by name."""
    found: dict[str, Protocol] = {}
    for folder in protocol_dirs():
        for path in sorted(folder.glob("*.yaml")):
            found.setdefault(path.stem, load_protocol(path))
    return [found[name] for name in sorted(found)]


def load_protocol(name_or_path: str | Path) -> Protocol:
    """A validated :class:`Protocol` from a shipped name (``thick-slice-x4``) or a YAML path.

    Raises:
        ProtocolError: unknown name, unreadable YAML, unknown keys, wrong types or values,
            naming the key path.
    """
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        matches = [d / f"{path.name}.yaml" for d in protocol_dirs() if (d / f"{path.name}.yaml").exists()]
        if not matches:
            known = sorted({p.stem for d in protocol_dirs() for p in d.glob("*.yaml")})
            close = difflib.get_close_matches(path.name, known, n=3, cutoff=0.6)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            raise ProtocolError(f"no protocol named {str(name_or_path)!r}{hint}",
                                fix=f"use one of: {', '.join(known)} (mrisr protocols), or a .yaml path")
        path = matches[0]
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProtocolError(f"cannot read the protocol ({exc.strerror or exc})", path, "check the path") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ProtocolError(f"not valid YAML ({reason})", path, "fix the YAML syntax") from None
    try:
        protocol = _dataclass(Protocol, data, "")
        protocol.validate()
    except ProtocolError as exc:
        raise ProtocolError(exc.problem, path, exc.fix) from None
    return Protocol(**{**{f.name: getattr(protocol, f.name) for f in fields(Protocol)}, "source": str(path)})
