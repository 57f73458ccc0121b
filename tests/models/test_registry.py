"""The shipped models: every card in mrisr/models checked against its weights, and the registry itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import phantom_affine, refused

from mrisr import cli
from mrisr.errors import InputError
from mrisr.export.sidecar import sha256_file
from mrisr.infer import load_model, upscale
from mrisr.models import SHIPPED_MODELS, registry
from mrisr.models.card import read_card, save_checkpoint
from mrisr.models.ship import MAX_TOTAL_BYTES
from mrisr.nets import VDSR
from mrisr.volume import Volume

PACKAGE_MODELS = Path(registry.__file__).resolve().parent
SHIPPED = sorted(p.stem for p in PACKAGE_MODELS.glob("*.json"))


def _forbid_pickle(monkeypatch) -> None:
    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)


def test_the_package_folder_holds_only_complete_models():
    """Zero models is fine; otherwise every weights file has its card and the total is under 20 MB."""
    assert registry.MODELS_DIR == PACKAGE_MODELS
    assert list(registry.shipped_models()) == SHIPPED
    cards = {p.stem for p in PACKAGE_MODELS.glob("*.json")}
    weights = {p.stem for p in PACKAGE_MODELS.glob("*.safetensors")}
    assert weights == cards, "every shipped .safetensors needs its .json card and the other way round"
    assert not list(PACKAGE_MODELS.glob(".ship-*")), "a staging folder was left behind"
    total = sum(p.stat().st_size for p in PACKAGE_MODELS.glob("*.safetensors"))
    assert total < MAX_TOTAL_BYTES


@pytest.mark.parametrize("name", SHIPPED or [pytest.param(None, marks=pytest.mark.skip(reason="no shipped models"))])
def test_each_shipped_card(name, monkeypatch):
    path = PACKAGE_MODELS / f"{name}.json"
    card = read_card(path)
    weights = path.parent / card["weights"]["file"]
    assert card["weights"]["file"] == f"{name}.safetensors" and card["name"] == name
    assert sha256_file(weights) == card["weights"]["sha256"]
    assert weights.stat().st_size == card["weights"]["bytes"]
    assert weights.stat().st_mode & 0o444 == 0o444  # readable by everyone once installed
    # what the issue asks each card to say
    for key in ("description", "intended_input", "protocol", "command", "hardware", "wall_time_s", "validation",
                "held_out", "licence_notes", "weights_dtype", "parameters"):
        assert card.get(key) is not None, key
    assert card["training_data"] and all(d["sha256"] and d["licence"] for d in card["training_data"])
    assert {h["sha256"] for h in card["held_out"]}.isdisjoint(d["sha256"] for d in card["training_data"])
    assert np.isfinite(card["validation"]["psnr_db"]) and card["hardware"]["device"]
    if card["weights_dtype"] == "float16":
        assert card["half_check"]["passed"]

    _forbid_pickle(monkeypatch)
    net = load_model(name, "cpu").net
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert sum(p.numel() for p in net.parameters()) == card["parameters"]
    volume = Volume(np.random.default_rng(0).uniform(0, 100, (1, 12, 10, 4)).astype(np.float32),
                    phantom_affine(0, 0, (1.0, 1.0, 3.0), 0.0))
    out = upscale(volume, name, device="cpu")
    assert out.shape == (12, 10, 12) and np.all(np.isfinite(out.array))


# --------------------------------------------------------------------------- the registry, on a folder of its own


def _tiny(folder: Path, name: str, dims: int = 2, **card) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(VDSR(dims, features=4, depth=2), folder, {"name": name, **card}, name=name)


def test_registry_is_read_live(models, monkeypatch):
    assert dict(SHIPPED_MODELS) == {} and len(SHIPPED_MODELS) == 0 and "a" not in SHIPPED_MODELS
    _tiny(models, "b-model")
    _tiny(models, "a-model")
    (models / "Not A Name.json").write_text("{}")
    assert list(SHIPPED_MODELS) == ["a-model", "b-model"] and SHIPPED_MODELS["a-model"] == models / "a-model.json"
    assert "a-model" in SHIPPED_MODELS and 3 not in SHIPPED_MODELS
    monkeypatch.setattr(registry, "MODELS_DIR", models / "absent")
    assert registry.shipped_models() == {}


def test_load_model_by_name(models, monkeypatch):
    _tiny(models, "vdsr2d-thick")
    _forbid_pickle(monkeypatch)
    model = load_model("vdsr2d-thick", "cpu")
    net, card = model.net, model.card
    assert card["name"] == "vdsr2d-thick" and isinstance(net, VDSR)
    with refused(InputError, "did you mean 'vdsr2d-thick'"):
        load_model("vdsr2d-thin", "cpu")
    with refused(InputError, "known: vdsr2d-thick"):
        load_model("unet", "cpu")
    (models / "vdsr2d-thick.safetensors").write_bytes(b"changed")
    with refused(InputError, "does not match the model card"):
        load_model("vdsr2d-thick", "cpu")


def test_mrisr_models_lists_them(models, capsys):
    assert cli.main(["models"]) == 0
    assert "no models ship" in capsys.readouterr().out
    _tiny(models, "vdsr3d", dims=3, description="three", intended_input={"summary": "anything 3D"},
          validation={"psnr_db": 33.5, "gain_db": 1.25}, protocol={"name": "vdsr3d"})
    (models / "broken.json").write_text("not json")
    assert cli.main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert "not valid JSON" in rows["broken"]["error"]
    row = rows["vdsr3d"]
    assert row["spatial_dims"] == 3 and row["parameters"] == sum(p.numel() for p in VDSR(3, features=4,
                                                                                         depth=2).parameters())
    assert row["protocol"] == "vdsr3d" and row["weights_dtype"] == "float32" and row["description"] == "three"
    assert row["weights_bytes"] == (models / "vdsr3d.safetensors").stat().st_size
    assert cli.main(["models"]) == 0
    text = capsys.readouterr().out
    assert "33.50dB" in text and "+1.25" in text and "for: anything 3D" in text and "default for other 3D" in text
    assert "broken" in text and "unreadable" in text
