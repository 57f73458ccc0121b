"""train(): a whole run through MONAI's SupervisedTrainer — run directory, checkpoints, resume, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import mrisr
from mrisr.cli import main
from mrisr.errors import InputError, OutputError
from mrisr.models.card import load_checkpoint

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"


def _protocol(tmp: Path, spatial_dims: int = 2, patch=(32, 32), epochs: int = 2) -> Path:
    card = yaml.safe_load((PROTOCOLS / "thick-slice-x4.yaml").read_text())
    card["network"] = {"name": "vdsr", "spatial_dims": spatial_dims, "features": 8, "depth": 4}
    card["train"] = {"patch_size": list(patch), "batch_size": 4, "epochs": epochs, "steps_per_epoch": 3,
                     "learning_rate": 0.01, "pairs_per_volume": 4}
    path = tmp / "p.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def test_a_run_directory_holds_everything(tmp_path: Path, volumes: list[Path], monkeypatch) -> None:
    run = mrisr.train(_protocol(tmp_path), [volumes[0]], tmp_path / "run", val=[volumes[1]], device="cpu",
                      progress=False, command=["mrisr", "train", "test"])
    assert sorted(p.name for p in run.iterdir()) == ["best", "metrics.csv", "protocol.json", "state", "tb"]
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and all(np.isfinite(float(r["val_psnr"])) for r in rows)
    assert any(p.name.startswith("events.out.tfevents") for p in (run / "tb").iterdir())
    assert json.loads((run / "protocol.json").read_text())["acquisition"]["slice"]["profile"] == "rect"

    def no_pickle(*args, **kwargs):  # the best model loads with safetensors alone
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)
    model, card = load_checkpoint(run / "best" / "model.json")
    assert card["architecture"]["name"] == "vdsr" and card["command"] == ["mrisr", "train", "test"]
    assert card["training_data"][0]["sha256"] and card["protocol"]["name"] == "thick-slice-x4"
    assert "val_psnr" in card["metrics"] and card["hardware"]["device"] == "cpu" and card["wall_time_s"] >= 0
    out = model(torch.zeros(1, 1, 16, 16))
    assert out.shape == (1, 1, 16, 16)


def test_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path: Path, volumes: list[Path]) -> None:
    protocol = _protocol(tmp_path, epochs=4)
    straight = mrisr.train(protocol, [volumes[0]], tmp_path / "a", epochs=4, device="cpu", progress=False)
    mrisr.train(protocol, [volumes[0]], tmp_path / "b", epochs=2, device="cpu", progress=False)
    resumed = mrisr.train(protocol, [volumes[0]], tmp_path / "b", epochs=4, device="cpu", progress=False,
                          resume=True)
    a, b = load_file(straight / "state" / "model.safetensors"), load_file(resumed / "state" / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert [int(r["epoch"]) for r in csv.DictReader(open(resumed / "metrics.csv"))] == [1, 2, 3, 4]


def test_max_steps_stops_and_still_saves(tmp_path: Path, volumes: list[Path]) -> None:
    run = mrisr.train(_protocol(tmp_path, epochs=5), [volumes[0]], tmp_path / "r", max_steps=4, device="cpu",
                      progress=False)
    assert json.loads((run / "state" / "state.json").read_text())["iteration"] == 4
    assert (run / "best" / "model.safetensors").exists()


def test_between_validations_no_epoch_replaces_the_validated_best(tmp_path: Path, volumes: list[Path]) -> None:
    card = yaml.safe_load(_protocol(tmp_path, epochs=5).read_text())
    card["train"]["val_interval"] = 2  # validated at epochs 2 and 4; epochs 1, 3, 5 are not
    (tmp_path / "v.yaml").write_text(yaml.safe_dump(card))
    run = mrisr.train(tmp_path / "v.yaml", [volumes[0]], tmp_path / "r", val=[volumes[1]], device="cpu",
                      progress=False)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    scores = {int(r["epoch"]): float(r["val_psnr"]) for r in rows if r.get("val_psnr")}
    assert sorted(scores) == [2, 4]
    _, best = load_checkpoint(run / "best")
    assert best["metrics"]["epoch"] in (2, 4) and best["metrics"]["val_psnr"] == max(scores.values())


def test_init_starts_from_a_checkpoint_and_the_card_says_so(tmp_path: Path, volumes: list[Path], capsys) -> None:
    first = mrisr.train(_protocol(tmp_path), [volumes[0]], tmp_path / "a", max_steps=2, device="cpu", progress=False)
    parent, parent_card = load_checkpoint(first / "best")
    # one step at a negligible learning rate: the weights are the parent's, not a fresh init
    still = yaml.safe_load(_protocol(tmp_path).read_text())
    still["train"]["learning_rate"] = 1e-12
    (tmp_path / "still.yaml").write_text(yaml.safe_dump(still))
    run = mrisr.train(tmp_path / "still.yaml", [volumes[0]], tmp_path / "b", init=first, max_steps=1, device="cpu",
                      progress=False)
    child, card = load_checkpoint(run / "best")
    assert all(torch.allclose(a, b, atol=1e-9) for a, b in zip(parent.state_dict().values(),
                                                               child.state_dict().values(), strict=True))
    assert card["initialised_from"]["weights_sha256"] == parent_card["weights"]["sha256"]
    other = yaml.safe_load(_protocol(tmp_path).read_text())
    other["network"]["features"] = 6
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(InputError, match="architecture"):
        mrisr.train(tmp_path / "other.yaml", [volumes[0]], tmp_path / "c", init=first, device="cpu", progress=False)
    with pytest.raises(InputError, match="init and resume"):
        mrisr.train(_protocol(tmp_path), [volumes[0]], first, init=first, resume=True, device="cpu", progress=False)
    assert main(["train", str(_protocol(tmp_path)), "--data", str(volumes[0]), "--out", str(tmp_path / "d"),
                 "--init", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "missing" in capsys.readouterr().err


def test_bad_training_inputs(tmp_path: Path, volumes: list[Path]) -> None:
    with pytest.raises(InputError, match="patch_size"):
        mrisr.train(_protocol(tmp_path, spatial_dims=2, patch=(16, 16, 16)), volumes, tmp_path / "x", device="cpu",
                    progress=False)
    with pytest.raises(InputError):
        mrisr.train(_protocol(tmp_path), [], tmp_path / "y", device="cpu", progress=False)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a scan")
    with pytest.warns(UserWarning, match="broken.nii.gz"):
        mrisr.train(_protocol(tmp_path), [broken, volumes[0]], tmp_path / "z", max_steps=1, device="cpu",
                    progress=False)
    with pytest.raises(OutputError, match="not empty"):
        mrisr.train(_protocol(tmp_path), [volumes[0]], tmp_path / "z", device="cpu", progress=False)
    with pytest.raises(InputError, match="resume"):
        mrisr.train(_protocol(tmp_path), [volumes[0]], tmp_path / "fresh", resume=True, device="cpu",
                    progress=False)


def test_cli_train_and_its_errors(tmp_path: Path, volumes: list[Path], capsys) -> None:
    code = main(["train", str(_protocol(tmp_path)), "--data", str(volumes[0]), "--out", str(tmp_path / "cli"),
                 "--max-steps", "2", "--device", "cpu", "--quiet"])
    assert code == 0 and (tmp_path / "cli" / "best" / "model.safetensors").exists()
    code = main(["train", str(_protocol(tmp_path)), "--data", str(tmp_path / "missing.nii.gz"), "--out",
                 str(tmp_path / "cli2"), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.strip().count("\n") <= 1


def _blocks(seed: int, n: int = 64) -> mrisr.Volume:
    """Random bright ellipsoids: sharp edges in every direction, to be recovered along the slice axis."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n)] * 3, indexing="ij")).astype(np.float32)
    image = np.zeros((n, n, n), np.float32)
    for _ in range(40):
        centre, radii, value = rng.uniform(8, n - 8, 3), rng.uniform(3, 12, 3), rng.uniform(100, 1000)
        image[(((grid - centre[:, None, None, None]) / radii[:, None, None, None]) ** 2).sum(0) < 1] = value
    return mrisr.Volume(image[None], np.eye(4))


@pytest.mark.slow
def test_a_tiny_vdsr_beats_its_interpolated_input_by_3db_in_300_steps(tmp_path: Path) -> None:
    """One synthetic phantom, 4x thicker slices (rect), 300 optimiser steps (about 100 s on 2
    CPU cores; a step count, not a time budget, so a loaded machine cannot change the result): on a
    held-out phantom the network's output is at least 3 dB closer to the truth than the cubic input."""
    from mrisr.evaluate.metrics import masked_psnr
    from mrisr.infer.runner import predict_normalised
    from mrisr.models.loaded import LoadedModel
    from mrisr.preprocess import foreground_mask
    from mrisr.protocol import load_protocol
    from mrisr.train.data import load_training_volumes, validation_pairs

    mrisr.save(_blocks(0), tmp_path / "train.nii.gz")
    mrisr.save(_blocks(1), tmp_path / "held_out.nii.gz")
    card = yaml.safe_load((PROTOCOLS / "thick-slice-x4.yaml").read_text())
    card["acquisition"]["slice"]["scale"] = 4.0
    card["network"] = {"name": "vdsr", "spatial_dims": 2, "features": 32, "depth": 8}
    card["train"] = {"patch_size": [48, 48], "batch_size": 16, "epochs": 1000, "steps_per_epoch": 20,
                     "optimizer": "adam", "learning_rate": 1e-3, "weight_decay": 0.0, "lr_schedule": "cosine",
                     "clip_mode": "norm", "clip_theta": 1.0, "pairs_per_volume": 16}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(card))
    torch.set_num_threads(2)
    run = mrisr.train(tmp_path / "p.yaml", [tmp_path / "train.nii.gz"], tmp_path / "run", epochs=15,
                      device="cpu", progress=False)
    model, _ = load_checkpoint(run / "best" / "model.json")
    pair = validation_pairs(load_training_volumes([tmp_path / "held_out.nii.gz"]),
                            load_protocol(tmp_path / "p.yaml"), 0)[0]
    prediction = predict_normalised(LoadedModel(model, {}, "run", "cpu"), pair["input"], pair["slice_axis"])
    mask = foreground_mask(pair["target"])
    gain = masked_psnr(prediction, pair["target"], mask) - masked_psnr(pair["input"], pair["target"], mask)
    assert gain >= 3.0, gain


@pytest.mark.slow
def test_two_process_torchrun_gloo_ranks_end_identical(tmp_path: Path, volumes: list[Path]) -> None:
    """torchrun --nproc_per_node 2 on CPU (gloo): the run finishes and both ranks hold the same weights."""
    import os
    import subprocess
    import sys

    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.skip("torchrun not found beside the interpreter")
    script = Path(__file__).with_name("ddp_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(_protocol(tmp_path)),
         str(volumes[0]), str(tmp_path / "ddp")],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = json.loads((tmp_path / "ddp" / "ranks.json").read_text())
    assert ranks["world_size"] == 2 and len(set(ranks["weight_sha256"])) == 1
    assert (tmp_path / "ddp" / "best" / "model.safetensors").exists()
