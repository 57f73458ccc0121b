"""ONNX export: dynamic batch and spatial axes, onnxruntime matches torch within 1e-4,
the model card's essentials in the metadata, atomic writes that never overwrite without force."""

from __future__ import annotations

import builtins
import json
import os

import numpy as np
import pytest
import torch

from mrisr.errors import InputError, OutputError
from mrisr.nets import VDSR

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from mrisr.infer.onnx import check_onnx, export_onnx, read_onnx_metadata  # noqa: E402
from mrisr.models.card import save_checkpoint  # noqa: E402


def _net(dims: int, seed: int = 0, **kwargs: int) -> VDSR:
    torch.manual_seed(seed)
    net = VDSR(spatial_dims=dims, features=8, depth=4, **kwargs).eval()
    with torch.no_grad():  # a non-zero last layer (He init leaves it random; make the bias count too)
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return net


def _run(path: os.PathLike[str], x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["output"], {"input": x.numpy()})[0]


def _assert_matches(path: os.PathLike[str], net: VDSR, x: torch.Tensor) -> None:
    got = _run(path, x)
    with torch.no_grad():
        expected = net(x).numpy()
    assert got.shape == expected.shape == x.shape[:1] + (net.out_channels,) + x.shape[2:]
    scale = max(float(expected.max() - expected.min()), 1.0)
    assert np.abs(got - expected).max() / scale <= 1e-4


@pytest.mark.parametrize(
    ("dims", "sizes"),
    [(2, [(24, 17), (40, 33)]), (3, [(9, 12, 7), (16, 11, 20)])],
    ids=["2d", "3d"],
)
def test_export_matches_torch_on_any_size(tmp_path, dims, sizes) -> None:
    net = _net(dims)
    out = export_onnx(net, tmp_path / "model.onnx")
    assert out == tmp_path / "model.onnx" and out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temporary left behind
    for size in sizes:  # dynamic spatial axes, batch 2 (the export traced batch 1)
        _assert_matches(out, net, torch.randn(2, 1, *size))
    _assert_matches(out, net, torch.randn(1, 1, *sizes[0]))  # and batch 1 still

    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, outp.name) == ("input", "output")
    assert len(inp.shape) == dims + 2 and inp.shape[1] == 1
    assert all(isinstance(d, str) for i, d in enumerate(inp.shape) if i != 1)  # symbolic: batch and spatial


def test_metadata_from_a_module(tmp_path) -> None:
    net = _net(3)
    out = export_onnx(net, tmp_path / "m.onnx", check=False)
    meta = read_onnx_metadata(out)
    assert meta["mrisr.format"] == "mrisr-onnx"
    assert meta["mrisr.version"] == __import__("mrisr").__version__
    assert json.loads(meta["mrisr.architecture"]) == {"name": "vdsr", "config": net.config}
    assert (meta["mrisr.spatial_dims"], meta["mrisr.in_channels"], meta["mrisr.out_channels"]) == ("3", "1", "1")
    assert meta["mrisr.layout"] == "(N, C, D, H, W)"
    assert "mrisr.source_sha256" not in meta  # no checkpoint, no source


def test_from_a_checkpoint_path(tmp_path) -> None:
    net = _net(2, seed=3, in_channels=2)  # a guidance channel: the input has 2 channels, the output 1
    card_file = save_checkpoint(net, tmp_path / "ckpt", {"note": "test"})
    card = json.loads(card_file.read_text())
    for given in (card_file, tmp_path / "ckpt", str(tmp_path / "ckpt" / "model.safetensors")):
        out = export_onnx(given, tmp_path / "m.onnx", force=True)
        _assert_matches(out, net, torch.randn(2, 2, 21, 30))
    meta = read_onnx_metadata(out)
    assert meta["mrisr.source_sha256"] == card["weights"]["sha256"]
    assert meta["mrisr.source"] == "model.json"
    assert len(meta["mrisr.source_card_sha256"]) == 64
    assert meta["mrisr.trained_with_mrisr"] == card["mrisr_version"]
    assert json.loads(meta["mrisr.architecture"]) == card["architecture"]
    assert meta["mrisr.in_channels"] == "2"


def test_existing_output_needs_force(tmp_path) -> None:
    dest = tmp_path / "m.onnx"
    dest.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists"):
        export_onnx(_net(2), dest)
    assert dest.read_bytes() == b"keep me"
    export_onnx(_net(2), dest, force=True)
    assert read_onnx_metadata(dest)["mrisr.spatial_dims"] == "2"


def test_never_overwrites_the_checkpoint(tmp_path) -> None:
    card_file = save_checkpoint(_net(2), tmp_path, {})
    weights = tmp_path / "model.safetensors"
    before = weights.read_bytes()
    with pytest.raises(OutputError, match="input"):
        export_onnx(card_file, weights, force=True)
    assert weights.read_bytes() == before


def test_a_failed_check_writes_nothing(tmp_path, monkeypatch) -> None:
    import mrisr.infer.onnx as onnx_mod

    def differs(path, model, *args, **kwargs):
        raise OutputError("onnxruntime differs from torch by 1 (relative to the output range)", path)

    monkeypatch.setattr(onnx_mod, "check_onnx", differs)
    with pytest.raises(OutputError, match=r"m\.onnx: onnxruntime differs"):
        export_onnx(_net(2), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_check_catches_a_mismatch(tmp_path) -> None:
    out = export_onnx(_net(3, seed=1), tmp_path / "m.onnx", check=False)
    assert check_onnx(out, _net(3, seed=1)) <= 1e-4
    with pytest.raises(OutputError, match="differs from torch"):
        check_onnx(out, _net(3, seed=2))  # other weights


def test_the_callers_model_is_left_as_it_was(tmp_path) -> None:
    net = _net(2).train()
    export_onnx(net, tmp_path / "m.onnx")
    assert net.training


@pytest.mark.parametrize("opset", [16, 21, "17", True])
def test_bad_opset(tmp_path, opset) -> None:
    with pytest.raises(InputError, match="opset"):
        export_onnx(_net(2), tmp_path / "m.onnx", opset=opset)
    assert not (tmp_path / "m.onnx").exists()


def test_opset_is_written(tmp_path) -> None:
    import onnx

    out = export_onnx(_net(2), tmp_path / "m.onnx", opset=20)
    assert {o.domain: o.version for o in onnx.load(str(out)).opset_import}[""] == 20


def test_bad_models(tmp_path) -> None:
    with pytest.raises(InputError, match="checkpoint not found"):
        export_onnx(tmp_path / "nothing", tmp_path / "m.onnx")
    with pytest.raises(InputError, match="config"):
        export_onnx(torch.nn.Conv2d(1, 1, 3), tmp_path / "m.onnx")
    with pytest.raises(InputError, match="torch module or a checkpoint path"):
        export_onnx(42, tmp_path / "m.onnx")  # type: ignore[arg-type]


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_without_onnx_packages(tmp_path, monkeypatch, missing) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == missing or name.startswith(missing + "."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(InputError, match=r"needs the onnx and onnxruntime packages.*pip install 'mrisr\[onnx\]'"):
        export_onnx(_net(2), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def _post_networks() -> list:
    from mrisr.nets import build_network

    table = [
        ("espcn", dict(spatial_dims=2, scale=4, features=[8, 4]), (2, 1, 12, 5)),
        ("espcn", dict(spatial_dims=3, scale=[2, 1, 3], features=[4, 4]), (1, 1, 5, 6, 3)),
        ("espcn", dict(spatial_dims=2, scale=[2, 2], features=[8, 4]), (2, 1, 7, 9)),
        ("lapsrn", dict(spatial_dims=2, scale=4, features=8, depth=2), (2, 1, 10, 6)),
        ("lapsrn", dict(spatial_dims=3, scale=4, features=4, depth=1), (1, 1, 6, 5, 3)),
        ("srresnet", dict(spatial_dims=2, scale=4, features=8, blocks=2, norm=None), (2, 1, 11, 4)),
        ("srresnet", dict(spatial_dims=3, scale=[1, 2, 2], features=4, blocks=1, norm="batch"), (1, 1, 4, 5, 3)),
        ("rfdn", dict(spatial_dims=2, scale=4, features=8, blocks=2), (2, 1, 9, 3)),
        ("rfdn", dict(spatial_dims=3, scale=[2, 1, 2], features=8, blocks=1), (1, 1, 3, 20, 2)),
    ]
    return [pytest.param(build_network, name, kwargs, shape, id=f"{name}-{kwargs['spatial_dims']}d-{i}")
            for i, (name, kwargs, shape) in enumerate(table)]


@pytest.mark.parametrize(("build", "name", "kwargs", "shape"), _post_networks())
def test_post_upsampling_networks_export_and_match_torch(tmp_path, build, name: str, kwargs: dict,
                                                         shape: tuple) -> None:
    torch.manual_seed(0)
    net = build(name, **kwargs).eval()
    with torch.no_grad():  # move off the initialisation (skip-scaled last layers, zero biases)
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = export_onnx(net, tmp_path / f"{name}.onnx")  # checks on its own random batch too
    meta = read_onnx_metadata(path)
    assert meta["mrisr.upsampling"] == "post" and json.loads(meta["mrisr.scale"]) == list(net.scale)
    assert check_onnx(path, net, shape) <= 1e-4
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = net(x).numpy()
    got = _run(path, x)
    assert got.shape == expected.shape == (shape[0], 1, *(s * f for s, f in zip(shape[2:], net.scale, strict=True)))
