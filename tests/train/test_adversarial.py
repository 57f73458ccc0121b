"""The adversarial stage (train.adversarial): SRGAN through the same MONAI trainer — D steps only after
start_iteration, no generator gradient in D, exact resume with the discriminator, the perceptual flag
in card, upscale record, sidecar, CLI and ONNX, and the protocol's checks."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import phantom
from monai.utils.enums import CommonKeys as Keys
from safetensors.torch import load_file

import mrisr
from mrisr.cli import main
from mrisr.errors import InputError, ProtocolError
from mrisr.infer import upscale
from mrisr.models.card import PERCEPTUAL_NOTE, load_checkpoint
from mrisr.nets.srgan import Discriminator, MRIFeatureNet
from mrisr.protocol import AdversarialBlock, load_protocol
from mrisr.train.adversarial import AdversarialStage
from mrisr.train.handlers import GradientClipping

PROTOCOLS = Path(__file__).resolve().parents[2] / "protocols"

ADVERSARIAL = {"start_iteration": 2, "discriminator_features": 4, "discriminator_dense": 8,
               "discriminator_norm": "none", "feature_widths": [4, 8], "feature_steps": 3}


def _protocol(tmp: Path, epochs: int = 2, network: dict | None = None, **adversarial: object) -> Path:
    card = yaml.safe_load((PROTOCOLS / "srgan-thick-x4.yaml").read_text())
    card["network"] = network or {"name": "srresnet", "spatial_dims": 2, "scale": 4, "features": 8,
                                  "options": {"blocks": 1, "norm": None, "kernel_size": 3}}
    card["train"] = {"patch_size": [32, 32], "batch_size": 4, "epochs": epochs, "steps_per_epoch": 3,
                     "optimizer": "adam", "learning_rate": 1e-3, "weight_decay": 0.0, "clip_mode": "norm",
                     "clip_theta": 1.0, "pairs_per_volume": 4, "adversarial": {**ADVERSARIAL, **adversarial}}
    path = tmp / "p.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def _stage(start: int = 0, **weights: float) -> AdversarialStage:
    torch.manual_seed(0)
    block = AdversarialBlock(start_iteration=start, discriminator_features=4, discriminator_dense=8, **weights)
    d = Discriminator(2, features=4, dense=8, norm=None)
    return AdversarialStage(block, d, MRIFeatureNet(2, features=[4, 8]), "mse", GradientClipping("norm", 1.0))


def _engine(iteration: int, sr: torch.Tensor, hr: torch.Tensor) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(iteration=iteration, output={Keys.PRED: sr, Keys.LABEL: hr}))


def test_discriminator_steps_only_after_start_and_the_generator_pass_leaves_it_no_gradient() -> None:
    stage = _stage(start=1)
    hr, sr = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16, requires_grad=True)
    before = [p.detach().clone() for p in stage.discriminator.parameters()]
    stage.discriminator_step(_engine(1, sr, hr))  # iteration 1 <= start: resting
    assert not stage.active
    assert all(torch.equal(a, p) for a, p in zip(before, stage.discriminator.parameters(), strict=True))
    pixel = float(torch.nn.functional.mse_loss(sr.detach(), hr))
    assert float(stage(sr, hr).detach()) == pytest.approx(pixel)  # the pixel loss alone

    stage.discriminator_step(_engine(2, sr, hr))
    assert stage.active
    assert any(not torch.equal(a, p) for a, p in zip(before, stage.discriminator.parameters(), strict=True))
    grads = [p.grad.clone() for p in stage.discriminator.parameters()]
    loss = stage(sr, hr)
    loss.backward()
    assert sr.grad is not None and float(sr.grad.abs().sum()) > 0
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, stage.discriminator.parameters(), strict=True))
    means = stage.epoch_means()
    assert set(means) == {"d_loss", "d_real", "d_fake", "g_pixel", "g_perceptual", "g_adversarial"}
    assert 0 < means["d_real"] < 1 and 0 < means["d_fake"] < 1 and stage.epoch_means() == {}


def test_generator_loss_is_the_weighted_three_terms() -> None:
    stage = _stage(w_pixel=0.5, w_perceptual=2.0, w_adversarial=0.1)
    hr, sr = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16)
    total = float(stage(sr, hr))
    parts = {k: v for k, v in stage.totals.items() if k.startswith("g_") and k != "g_steps"}
    assert total == pytest.approx(0.5 * parts["g_pixel"] + 2.0 * parts["g_perceptual"]
                                  + 0.1 * parts["g_adversarial"], rel=1e-5)


def test_an_adversarial_run_logs_d_after_start_and_flags_its_card_perceptual(tmp_path: Path,
                                                                             volumes: list[Path]) -> None:
    run = mrisr.train(_protocol(tmp_path), [volumes[0]], tmp_path / "run", val=[volumes[1]], device="cpu",
                      progress=False)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    # epoch 1 is iterations 1-3: D rests for 1-2 and steps at 3; epoch 2 steps at every iteration
    assert all(float(r["d_loss"]) > 0 and 0 < float(r["d_fake"]) < 1 for r in rows)
    assert all(float(r["val_sharpness"]) > 0 and float(r["ref_sharpness"]) > 0 for r in rows)
    assert (run / "perceptual" / "feature_net.safetensors").is_file()
    state = json.loads((run / "state" / "state.json").read_text())
    assert "discriminator" in state["extra"] and (run / "state" / "discriminator.safetensors").is_file()
    _, card = load_checkpoint(run / "best" / "model.json")
    assert card["perceptual"] is True and card["perceptual_note"] == PERCEPTUAL_NOTE
    assert card["metrics"]["epoch"] == 2  # the last epoch, not the best PSNR
    assert card["adversarial"]["weights"] == {"pixel": 1.0, "perceptual": 1.0, "adversarial": 0.001}
    assert card["adversarial"]["feature_net"]["sha256"] and card["adversarial"]["discriminator"]["features"] == 4


def test_resume_with_the_discriminator_equals_an_uninterrupted_run(tmp_path: Path, volumes: list[Path]) -> None:
    protocol = _protocol(tmp_path, epochs=3)
    straight = mrisr.train(protocol, [volumes[0]], tmp_path / "a", device="cpu", progress=False)
    mrisr.train(protocol, [volumes[0]], tmp_path / "b", epochs=1, device="cpu", progress=False)
    resumed = mrisr.train(protocol, [volumes[0]], tmp_path / "b", epochs=3, device="cpu", progress=False,
                          resume=True)
    for name in ("model", "discriminator"):
        a = load_file(straight / "state" / f"{name}.safetensors")
        b = load_file(resumed / "state" / f"{name}.safetensors")
        assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6, name


def test_perceptual_outputs_are_flagged_in_record_sidecar_cli_and_onnx(tmp_path: Path, volumes: list[Path],
                                                                       capsys: pytest.CaptureFixture) -> None:
    run = mrisr.train(_protocol(tmp_path, epochs=1), [volumes[0]], tmp_path / "run", device="cpu", progress=False)
    lr = phantom(1, seed=2, shape=(20, 18, 6), spacing=(1.0, 1.0, 4.0), dtype="float32")
    out = upscale(lr, run / "best" / "model.json", spacing=1.0, device="cpu")
    record = out.meta["upscale"]
    assert record["perceptual"] is True and record["model"]["perceptual"] is True
    assert record["perceptual_note"] == PERCEPTUAL_NOTE

    src = mrisr.save(lr, tmp_path / "lr.nii.gz")
    assert main(["upscale", str(src), "-o", str(tmp_path / "sr.nii.gz"), "--model", str(run / "best"),
                 "--device", "cpu", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "perceptual model" in err and "may contain plausible detail" in err
    sidecar = json.loads((tmp_path / "sr.json").read_text())
    assert sidecar["model"]["perceptual"] is True and sidecar["upscale"]["perceptual_note"] == PERCEPTUAL_NOTE

    pytest.importorskip("onnx")
    from mrisr.infer.onnx import export_onnx, read_onnx_metadata

    onnx_path = export_onnx(run / "best" / "model.json", tmp_path / "m.onnx", check=False)
    meta = read_onnx_metadata(onnx_path)
    assert meta["mrisr.perceptual"] == "true" and meta["mrisr.perceptual_note"] == PERCEPTUAL_NOTE


def test_a_pixel_loss_model_is_not_flagged(tmp_path: Path) -> None:
    from mrisr.nets.espcn import ESPCN

    lr = phantom(1, seed=2, shape=(12, 10, 4), spacing=(1.0, 1.0, 4.0), dtype="float32")
    out = upscale(lr, ESPCN(2, features=[4, 4]).eval(), spacing=1.0, device="cpu")
    assert out.meta["upscale"]["perceptual"] is False and "perceptual_note" not in out.meta["upscale"]


def test_a_progressive_network_is_refused(tmp_path: Path, volumes: list[Path]) -> None:
    protocol = _protocol(tmp_path, network={"name": "lapsrn", "spatial_dims": 2, "scale": 4, "features": 8,
                                            "depth": 1})
    with pytest.raises(InputError, match="one output"):
        mrisr.train(protocol, [volumes[0]], tmp_path / "run", device="cpu", progress=False)


@pytest.mark.parametrize(("key", "value", "match"), [
    ("w_adversarial", -1.0, "w_adversarial"),
    ("feature_steps", 0, "feature_steps"),
    ("discriminator_lr", 0.0, "discriminator_lr"),
    ("feature_widths", [], "feature_widths"),
    ("discriminator_norm", "layer", "discriminator_norm"),
    ("unknown", 1, "unknown key"),
])
def test_the_protocol_checks_the_adversarial_block(tmp_path: Path, key: str, value: object, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        load_protocol(_protocol(tmp_path, **{key: value}))


def test_all_weights_zero_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="every loss weight is 0"):
        load_protocol(_protocol(tmp_path, w_pixel=0.0, w_perceptual=0.0, w_adversarial=0.0))


def test_shipped_srgan_protocol_builds_srresnet_16_blocks() -> None:
    proto = load_protocol("srgan-thick-x4")
    assert proto.network.name == "srresnet" and proto.network.options["blocks"] == 16
    assert proto.train.adversarial is not None and proto.train.adversarial.w_adversarial == pytest.approx(1e-3)
    assert np.isclose(proto.train.adversarial.w_perceptual, 1.0)


@pytest.mark.slow
def test_srgan_on_a_phantom_beats_linear_interpolation() -> None:
    """SRResNet 200 pixel-loss steps, then 200 adversarial steps (feature network trained on the phantoms),
    on 32x32 phantoms whose last axis was box-averaged by 4: held-out MSE below upsample_linear's."""
    from conftest import blob_phantoms

    from mrisr.nets.shuffle import upsample_linear
    from mrisr.nets.srgan import SRResNet, train_feature_net

    torch.manual_seed(0)
    torch.set_num_threads(1)
    r = 4
    train, test = blob_phantoms(64, seed=0), blob_phantoms(16, seed=1)
    x_train, x_test = (t.reshape(*t.shape[:-1], t.shape[-1] // r, r).mean(-1) for t in (train, test))
    features = train_feature_net(train, steps=60, features=[8, 16], batch_size=16)
    block = AdversarialBlock(start_iteration=200, discriminator_features=8, discriminator_dense=32,
                             discriminator_norm="none")
    stage = AdversarialStage(block, Discriminator(2, features=8, dense=32, norm=None), features, "mse",
                             GradientClipping("norm", 1.0))
    net = SRResNet(2, scale=r, features=8, blocks=2, norm=None)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for step in range(1, 401):
        idx = torch.randint(0, len(train), (16,))
        sr = net(x_train[idx])
        stage.discriminator_step(_engine(step, sr, train[idx]))
        loss = stage(sr, train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    means = stage.epoch_means()
    assert means["d_loss"] > 0 and means["g_perceptual"] > 0
    net.eval()
    with torch.no_grad():
        mse = float((net(x_test) - test).square().mean())
    baseline = float((upsample_linear(x_test, (1, r)) - test).square().mean())
    assert mse < 0.8 * baseline, (mse, baseline)
