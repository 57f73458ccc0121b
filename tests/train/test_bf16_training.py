"""Training behind inference's precision switch: bfloat16 autocast on the CPU (mrisr.train.precision)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import phantom
from safetensors.torch import load_file
from test_engine import _protocol

import mrisr
from mrisr.cli import main
from mrisr.infer import precision as infer_precision
from mrisr.nets import VDSR
from mrisr.train.precision import Bf16Inferer


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    return mrisr.save(phantom(0, seed=0, shape=(40, 36, 32), spacing=(1.0, 1.0, 1.0), dtype="float32"),
                      tmp_path / "hr.nii.gz")


class _ConvDtypes:
    """The dtypes every convolution computed in, while active (a global forward hook)."""

    def __enter__(self) -> set[torch.dtype]:
        self.seen: set[torch.dtype] = set()

        def hook(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)) and module.training:
                self.seen.add(output.dtype)

        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self.seen

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


def _losses(run: Path) -> list[float]:
    return [float(r["loss"]) for r in csv.DictReader(open(run / "metrics.csv"))]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_bf16_training_runs_the_convolutions_in_bf16_and_keeps_float32_weights(
        tmp_path: Path, volume: Path, spatial_dims: int) -> None:
    patch = (32, 32) if spatial_dims == 2 else (16, 16, 16)
    protocol = _protocol(tmp_path, spatial_dims=spatial_dims, patch=patch)
    with _ConvDtypes() as seen:
        run = mrisr.train(protocol, [volume], tmp_path / "bf16", device="cpu", progress=False, precision="bfloat16")
    assert seen == {torch.bfloat16}
    card = json.loads((run / "best" / "model.json").read_text())
    assert card["hardware"]["precision"] == "bfloat16"
    weights = load_file(run / "state" / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}
    assert all(torch.isfinite(t).all() for t in weights.values())

    with _ConvDtypes() as seen:
        ref = mrisr.train(protocol, [volume], tmp_path / "f32", device="cpu", progress=False, precision="float32")
    assert seen == {torch.float32}
    assert json.loads((ref / "best" / "model.json").read_text())["hardware"]["precision"] == "float32"
    # same seed, same patches: bf16 rounding changes the loss curve only a little
    for a, b in zip(_losses(run), _losses(ref), strict=True):
        assert a == pytest.approx(b, rel=0.05)


def test_auto_follows_the_cpu(tmp_path: Path, volume: Path, monkeypatch) -> None:
    monkeypatch.setattr(infer_precision, "cpu_has_native_bf16", lambda: False)
    run = mrisr.train(_protocol(tmp_path, epochs=1), [volume], tmp_path / "a", device="cpu", progress=False)
    assert json.loads((run / "best" / "model.json").read_text())["hardware"]["precision"] == "float32"
    monkeypatch.setattr(infer_precision, "cpu_has_native_bf16", lambda: True)
    run = mrisr.train(_protocol(tmp_path, epochs=1), [volume], tmp_path / "b", device="cpu", progress=False)
    assert json.loads((run / "best" / "model.json").read_text())["hardware"]["precision"] == "bfloat16"


def test_the_cli_passes_the_precision(tmp_path: Path, volume: Path) -> None:
    protocol = _protocol(tmp_path, epochs=1)
    assert main(["train", str(protocol), "--data", str(volume), "--out", str(tmp_path / "r"), "--device", "cpu",
                 "--precision", "float32", "--quiet"]) == 0
    assert json.loads((tmp_path / "r" / "best" / "model.json").read_text())["hardware"]["precision"] == "float32"


def test_an_unknown_precision_is_refused_before_training(tmp_path: Path, volume: Path, capsys) -> None:
    with pytest.raises(mrisr.errors.InputError, match="precision must be one of"):
        mrisr.train(_protocol(tmp_path), [volume], tmp_path / "r", device="cpu", progress=False, precision="fp8")
    with pytest.raises(SystemExit):
        main(["train", "x", "--data", str(volume), "--out", str(tmp_path / "s"), "--precision", "fp8"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_the_bf16_inferer_returns_float32_close_to_float32(spatial_dims: int) -> None:
    torch.manual_seed(0)
    net = VDSR(spatial_dims=spatial_dims, features=16, depth=4)
    x = torch.rand(2, 1, *([24] * spatial_dims))
    reference = net(x)
    net = net.to(memory_format=infer_precision.channels_last(spatial_dims + 2))
    out = Bf16Inferer()(x, net)
    assert out.dtype == torch.float32 and out.shape == reference.shape
    # the residual sum is float32 (x + body(x)): the error is bf16's on the small residual only
    diff, size = (out - reference).detach().abs().max(), reference.detach().abs().max()
    assert float(diff) < 0.02 * float(size)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())
