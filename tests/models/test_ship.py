"""python -m mrisr.models.ship: a tiny training run shipped end to end into a temporary models folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import phantom, refused
from safetensors import safe_open

import mrisr
from mrisr import cli
from mrisr.errors import InputError, OutputError
from mrisr.export.sidecar import sha256_file
from mrisr.infer import load_model
from mrisr.models import ship
from mrisr.models.card import load_checkpoint
from mrisr.protocol import load_protocol

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """A 2-step tiny 2D run on one phantom, validated on a second; a third is the test volume."""
    tmp = tmp_path_factory.mktemp("ship")
    paths = [mrisr.save(phantom(i, seed=i, shape=(24, 20, 16), spacing=(1.0, 1.0, 1.0), dtype="float32"),
                        tmp / f"hr{i}.nii.gz") for i in range(3)]
    card = yaml.safe_load((PROTOCOLS / "thick-slice-x4.yaml").read_text())
    # 8 features: with 4, two steps leave weights whose float16 rounding moves the fused-plane SSIM by 1.2e-4,
    # past the half check's 1e-4, so the end-to-end test would test the refusal instead
    card["network"] = {"name": "vdsr", "spatial_dims": 2, "features": 8, "depth": 3}
    card["train"] = {"patch_size": [16, 16], "batch_size": 2, "epochs": 1, "steps_per_epoch": 2,
                     "pairs_per_volume": 2, "val_interval": 1}
    protocol = tmp / "tiny.yaml"
    protocol.write_text(yaml.safe_dump(card))
    command = ["mrisr", "train", str(protocol), "--data", str(paths[0]), "--val", str(paths[1]), "--out",
               str(tmp / "run"), "--seed", "3"]
    out = mrisr.train(protocol, [paths[0]], tmp / "run", val=[paths[1]], device="cpu", progress=False, seed=3,
                      command=command)
    return {"run": out, "train": paths[0], "val": paths[1], "test": paths[2],
            "licences": {paths[0].name: "CC0 (synthetic phantom)"}}


def _ship(run: dict, name: str = "tiny-thick", **kwargs) -> Path:
    kwargs = {"held_out": [run["test"]], "licences": run["licences"], "device": "cpu", **kwargs}
    return ship.ship(run["run"], name, **kwargs)


def test_ship_half_end_to_end(run, models, monkeypatch, capsys):
    card_path = _ship(run, half=True, command=["python", "-m", "mrisr.models.ship", "RUN", "tiny-thick", "--half"])
    assert card_path == models / "tiny-thick.json"
    assert sorted(p.name for p in models.iterdir()) == ["tiny-thick.json", "tiny-thick.safetensors"]  # no staging
    weights = models / "tiny-thick.safetensors"
    assert weights.stat().st_mode & 0o777 == 0o644 and card_path.stat().st_mode & 0o777 == 0o644
    with safe_open(weights, "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}

    card = json.loads(card_path.read_text())
    assert card["name"] == "tiny-thick" and card["description"]
    assert card["weights"]["sha256"] == sha256_file(weights) and card["weights"]["bytes"] == weights.stat().st_size
    assert card["weights_dtype"] == "float16" and card["parameters"] > 0
    # the training card's fields are kept
    assert card["command"][:2] == ["mrisr", "train"] and card["hardware"]["device"] == "cpu"
    assert card["wall_time_s"] >= 0 and card["protocol"]["name"] == "thick-slice-x4"
    assert card["protocol"]["train"]["patch_size"] == [16, 16]  # the resolved protocol, for upscale's defaults
    assert card["training_data"] == [{"path": str(run["train"]), "sha256": sha256_file(run["train"]),
                                      "licence": "CC0 (synthetic phantom)"}]
    assert [(h["file"], h["role"].split()[0], h["sha256"]) for h in card["held_out"]] == [
        ("hr1.nii.gz", "validation", sha256_file(run["val"])), ("hr2.nii.gz", "test", sha256_file(run["test"]))]
    assert card["licence_notes"]
    val = card["validation"]
    assert val["seed"] == 3 and val["weights"] == "float16" and len(val["volumes"]) == 1
    assert val["gain_db"] == pytest.approx(val["psnr_db"] - val["baseline_psnr_db"])
    check = card["half_check"]
    assert check["passed"] and check["max_abs_difference"]["psnr_db"] < 0.01
    assert check["max_abs_difference"]["ssim"] < 1e-4
    assert card["intended_input"]["summary"].startswith("slices x2-6 the input spacing, rect profile, no in-plane loss")
    assert card["shipped"]["command"][-1] == "--half"
    assert card["source_run"]["path"] == str(run["run"])

    def no_pickle(*args, **kwargs):
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)
    model = load_model("tiny-thick", "cpu")  # by name, through the registry
    net = model.net
    assert model.card["name"] == "tiny-thick"
    assert all(p.dtype == torch.float32 for p in net.parameters())  # float16 weights in the float32 network
    reference, _ = load_checkpoint(run["run"] / "best")
    for key, value in net.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key].half().float())

    capsys.readouterr()
    assert cli.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["tiny-thick"]
    assert rows[0]["spatial_dims"] == 2 and rows[0]["weights_dtype"] == "float16"
    assert rows[0]["validation"]["psnr_db"] == val["psnr_db"] and rows[0]["parameters"] == card["parameters"]
    assert cli.main(["models"]) == 0
    text = capsys.readouterr().out
    assert "tiny-thick" in text and "thick-slice-x4" in text and "slices x2-6" in text


def test_float32_replacing_and_the_size_budget(run, models, monkeypatch):
    _ship(run, val=[run["val"]])
    card = json.loads((models / "tiny-thick.json").read_text())
    assert card["weights_dtype"] == "float32" and card["half_check"] is None
    with refused(OutputError, "shipped already"):
        _ship(run)
    size = (models / "tiny-thick.safetensors").stat().st_size
    monkeypatch.setattr(ship, "MAX_TOTAL_BYTES", int(1.5 * size))
    _ship(run, force=True, description="replaced")  # replacing itself: the old copy does not count
    assert json.loads((models / "tiny-thick.json").read_text())["description"] == "replaced"
    with refused(InputError, "would total"):  # the other models do
        _ship(run, name="second")
    assert sorted(p.name for p in models.iterdir()) == ["tiny-thick.json", "tiny-thick.safetensors"]


def test_refusals_leave_nothing_behind(run, models, monkeypatch):
    with refused(InputError, "one of the training volumes"):
        _ship(run, held_out=[run["train"]])
    with refused(InputError, "no known licence"):
        _ship(run, licences={})
    with refused(InputError, "not a training run"):
        ship.ship(run["train"].parent, "x", device="cpu")
    with refused(InputError, "lower-case"):
        _ship(run, name="Bad Name")
    with refused(InputError, "validation volume not found"):
        _ship(run, val=[run["val"].parent / "missing.nii.gz"])
    monkeypatch.setattr(ship, "HALF_TOLERANCE", {"psnr_db": 0.0, "ssim": 0.0})
    with refused(InputError, "float16 weights change the validation"):
        _ship(run, half=True)
    monkeypatch.setattr(ship, "MAX_TOTAL_BYTES", 1000)
    with refused(InputError, "over the 0.001 MB budget"):
        _ship(run)
    assert list(models.iterdir()) == []


def test_command_line(run, models, capsys):
    status = ship.main([str(run["run"]), "cli-model", "--held-out", str(run["test"]), "--licence",
                        f"{run['train'].name}=CC0", "--device", "cpu", "--description", "from the CLI"])
    out = capsys.readouterr()
    assert status == 0, out.err
    assert "cli-model.safetensors" in out.out and "over tricubic" in out.out
    card = json.loads((models / "cli-model.json").read_text())
    assert card["description"] == "from the CLI" and card["shipped"]["command"][:3] == ["python", "-m",
                                                                                       "mrisr.models.ship"]
    assert ship.main([str(run["run"]), "cli-model", "--licence", "x=y", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mrisr ship: error:") and "shipped already" in err and err.count("\n") == 1
    assert ship.main([str(run["run"]), "other", "--licence", "nonsense", "--device", "cpu"]) == 2
    assert "FILE=TEXT" in capsys.readouterr().err


def test_intended_input_of_the_default_protocols():
    def block(name: str) -> dict:
        path = PROTOCOLS / f"{name}.yaml"
        if not path.exists():
            pytest.skip(f"{path} absent")
        return ship.intended_input(load_protocol(path).as_dict()["acquisition"], name)

    thick, three = block("vdsr2d-thick"), block("vdsr3d")
    assert thick["summary"].startswith("slices 2-6 mm, gaps 0-1 mm") and "no in-plane loss" in thick["summary"]
    assert thick["slice_thickness_mm"] == [2.0, 6.0] and "through-plane" in thick["default_for"]
    assert "in-plane acquired at 1-2 mm (zerofilled)" in three["summary"] and "SNR 20 to noise-free" in three["summary"]
    assert three["in_plane_acquired_mm"] == [1.0, 2.0] and three["default_for"]
    assert ship.intended_input(load_protocol(PROTOCOLS / "thick-slice-x4.yaml").as_dict()["acquisition"],
                               "other")["default_for"] is None
