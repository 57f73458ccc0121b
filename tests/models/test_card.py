"""Checkpoints: safetensors + JSON card, round trip, no pickle, sha256 check, refusals."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mrisr
from mrisr.errors import InputError, OutputError
from mrisr.models.card import FORMAT, card_path, load_checkpoint, read_card, save_checkpoint
from mrisr.nets import VDSR

CALLER_CARD = {
    "protocol": {"name": "thick-slice-t1", "path": "protocols/t1.yaml"},
    "training_data": [{"path": "data/a.nii.gz", "sha256": "ab" * 32}],
    "metrics": {"val_psnr": 31.5, "loss": float("nan"), "epoch": 3},
    "hardware": {"device": "cpu", "gpu": None},
    "wall_time_s": 12.5,
    "command": ["mrisr", "train", "protocols/t1.yaml", "--data", "a.nii.gz"],
    "data_dir": Path("/data/hr"),
}


def _net(spatial_dims: int) -> VDSR:
    torch.manual_seed(spatial_dims)
    return VDSR(spatial_dims, features=4, depth=3)


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in these tests may call torch.load or unpickle."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load / pickle must not be called")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_round_trip_gives_identical_outputs(tmp_path: Path, spatial_dims: int) -> None:
    net = _net(spatial_dims)
    x = torch.randn((2, 1) + (6,) * spatial_dims)
    with torch.no_grad():
        expected = net(x)
    path = save_checkpoint(net, tmp_path / "best", CALLER_CARD)
    assert path == tmp_path / "best" / "model.json"
    for where in (path, tmp_path / "best", tmp_path / "best" / "model.safetensors"):
        loaded, card = load_checkpoint(where)
        assert isinstance(loaded, VDSR) and not loaded.training
        assert loaded.config == net.config
        with torch.no_grad():
            assert torch.equal(loaded(x), expected)
    assert card["architecture"] == {"name": "vdsr", "config": net.config}


def test_round_trip_of_a_channels_last_model(tmp_path: Path) -> None:
    net = _net(3).to(memory_format=torch.channels_last_3d)
    save_checkpoint(net, tmp_path, {})
    loaded, _ = load_checkpoint(tmp_path)
    for a, b in zip(net.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_files_are_safetensors_and_json_only(tmp_path: Path) -> None:
    net = _net(2)
    save_checkpoint(net, tmp_path, CALLER_CARD, name="best")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.json", "best.safetensors"]  # no temporaries left

    raw = (tmp_path / "best.safetensors").read_bytes()
    assert not raw.startswith((b"\x80", b"PK"))  # neither a pickle nor torch.save's zip
    (size,) = struct.unpack("<Q", raw[:8])  # safetensors: u64 little-endian header size, then JSON
    header = json.loads(raw[8 : 8 + size])
    assert header.pop("__metadata__")["format"] == FORMAT
    assert set(header) == set(net.state_dict())
    end = max(entry["data_offsets"][1] for entry in header.values())
    assert 8 + size + end == len(raw)  # nothing after the tensors' bytes
    for key, entry in header.items():
        assert entry["dtype"] == "F32" and entry["shape"] == list(net.state_dict()[key].shape)

    # the weights load with safetensors alone
    state = load_file(tmp_path / "best.safetensors")
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())

    card = json.loads((tmp_path / "best.json").read_text())  # strict JSON: no NaN literals
    assert card["weights"]["file"] == "best.safetensors" and len(card["weights"]["sha256"]) == 64
    assert card["weights"]["bytes"] == len(raw)


def test_card_fields(tmp_path: Path) -> None:
    net = _net(3)
    card = read_card(save_checkpoint(net, tmp_path, CALLER_CARD))
    assert card["format"] == "mrisr-model" and card["format_version"] == 1
    assert card["mrisr_version"] == mrisr.__version__
    assert card["architecture"] == {"name": "vdsr", "config": net.config}
    for key in ("protocol", "training_data", "hardware", "wall_time_s", "command"):
        assert card[key] == CALLER_CARD[key]
    assert card["metrics"] == {"val_psnr": 31.5, "loss": "nan", "epoch": 3}
    assert card["data_dir"] == "/data/hr"


def test_reserved_fields_are_set_by_save(tmp_path: Path) -> None:
    card = read_card(save_checkpoint(_net(2), tmp_path, {"format": "other", "mrisr_version": "0.0.0", "x": 1}))
    assert card["format"] == FORMAT and card["mrisr_version"] == mrisr.__version__ and card["x"] == 1


def test_tampered_weights_are_refused(tmp_path: Path) -> None:
    save_checkpoint(_net(2), tmp_path, {})
    weights = tmp_path / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0x01  # one byte of a tensor
    weights.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="sha256") as info:
        load_checkpoint(tmp_path)
    assert "model.safetensors" in str(info.value) and "corrupt" in str(info.value)


def _edit_card(path: Path, **changes: object) -> None:
    card = json.loads(path.read_text())
    card.update(changes)
    path.write_text(json.dumps(card))


def test_unknown_architecture_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(_net(2), tmp_path, {})
    _edit_card(path, architecture={"name": "unet", "config": {"spatial_dims": 2}})
    with pytest.raises(InputError, match="unet") as info:
        load_checkpoint(path)
    assert "model.json" in str(info.value) and "vdsr" in str(info.value)


def test_weights_that_do_not_fit_the_architecture(tmp_path: Path) -> None:
    path = save_checkpoint(_net(2), tmp_path, {})
    card = json.loads(path.read_text())
    _edit_card(path, architecture={"name": "vdsr", "config": {**card["architecture"]["config"], "depth": 4}})
    with pytest.raises(InputError, match="missing"):
        load_checkpoint(path)
    _edit_card(path, architecture={"name": "vdsr", "config": {**card["architecture"]["config"], "features": 5}})
    with pytest.raises(InputError, match="wrong shape"):
        load_checkpoint(path)


def test_existing_files_need_force(tmp_path: Path) -> None:
    first, second = _net(2), VDSR(2, features=4, depth=3)
    save_checkpoint(first, tmp_path, {"run": 1})
    with pytest.raises(OutputError, match="exists"):
        save_checkpoint(second, tmp_path, {"run": 2})
    (tmp_path / "model.json").unlink()  # only the weights are left: still refused, and nothing written
    with pytest.raises(OutputError, match="exists"):
        save_checkpoint(second, tmp_path, {"run": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    save_checkpoint(second, tmp_path, {"run": 2}, force=True)
    loaded, card = load_checkpoint(tmp_path)
    assert card["run"] == 2
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), second.state_dict().values(),
                                                 strict=True))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "other"}, "unknown model card format"),
        ({"format_version": 99}, "newer"),
        ({"architecture": "vdsr"}, "architecture"),
        ({"weights": {"file": "../elsewhere.safetensors", "sha256": "00"}}, "file name beside the card"),
    ],
)
def test_read_card_refuses_bad_cards(tmp_path: Path, changes: dict, message: str) -> None:
    path = save_checkpoint(_net(2), tmp_path, {})
    _edit_card(path, **changes)
    with pytest.raises(InputError, match=message) as info:
        read_card(path)
    assert str(path) in str(info.value)


def test_read_card_missing_format_and_not_json(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    path.write_text('{"weights": {}}')
    with pytest.raises(InputError, match="no 'format'") as info:
        read_card(path)
    assert str(path) in str(info.value)
    path.write_text("not json")
    with pytest.raises(InputError, match="not valid JSON"):
        read_card(tmp_path)
    with pytest.raises(InputError, match="not found"):
        read_card(tmp_path / "other.json")
    with pytest.raises(InputError, match="not a checkpoint"):
        card_path(tmp_path / "model.pt")


def test_missing_weights_file(tmp_path: Path) -> None:
    save_checkpoint(_net(2), tmp_path, {})
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(InputError, match="not found"):
        load_checkpoint(tmp_path / "model.json")


def test_unregistered_model_and_bad_card(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a registered network"):
        save_checkpoint(torch.nn.Conv2d(1, 1, 3), tmp_path, {})
    with pytest.raises(InputError, match="not JSON"):
        save_checkpoint(_net(2), tmp_path, {"bad": object()})
    assert list(tmp_path.iterdir()) == []
