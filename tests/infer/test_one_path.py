"""One inference path: the Python API and the CLI run a shipped model the same way, because the
model card travels with the network (a LoadedModel) through every entry point."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import phantom

from mrisr import cli
from mrisr.infer import upscale
from mrisr.io import load, save
from mrisr.models import shipped_models
from mrisr.models.loaded import load_model

#: An input per shipped model, each larger than a 3D card's 32^3 training window, so that the
#: window the card names (not the 64^3 default) must reach the sliding-window inferer.
INPUTS = {"vdsr2d-thick": ((40, 36, 10), (1.0, 1.0, 4.0)), "vdsr3d": ((40, 36, 14), (1.0, 1.0, 3.0))}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(INPUTS))
def test_api_and_cli_give_the_same_output(name, tmp_path, capsys) -> None:
    if name not in shipped_models():
        pytest.skip(f"{name} is not shipped")
    shape, spacing = INPUTS[name]
    source = save(phantom(0, shape=shape, spacing=spacing, dtype="int16"), tmp_path / "lr.nii.gz")
    volume = load(source)
    api = upscale(volume, name, device="cpu")
    assert cli.main(["upscale", str(source), "-o", str(tmp_path / "sr.nii.gz"), "--model", name,
                     "--device", "cpu", "--quiet"]) == 0
    by_cli = load(tmp_path / "sr.nii.gz")
    np.testing.assert_allclose(by_cli.affine, api.affine, atol=1e-9)
    value_range = float(np.ptp(api.array))
    assert float(np.max(np.abs(by_cli.array - api.array))) <= 1e-4 * value_range
    if load_model(name).patch_size(3) is not None:  # the 3D window is the card's, on both paths
        assert api.meta["upscale"]["roi_size"] == list(load_model(name).patch_size(3))


def test_a_loaded_model_carries_its_card_into_upscale(tmp_path) -> None:
    """A LoadedModel given to upscale runs with its card's training window, not the default."""
    import torch

    from mrisr.models.loaded import LoadedModel
    from mrisr.nets import VDSR

    torch.manual_seed(0)
    net = VDSR(3, features=4, depth=2).eval()
    card = {"architecture": {"name": "vdsr", "config": dict(net.config)}, "protocol": {"train": {"patch_size":
                                                                                                [16, 16, 16]}}}
    volume = phantom(0, shape=(24, 20, 8), spacing=(1.0, 1.0, 3.0), dtype="int16")
    with_card = upscale(volume, LoadedModel(net, card, "tiny", "cpu"), device="cpu")
    bare = upscale(volume, net, device="cpu")
    assert with_card.meta["upscale"]["roi_size"] == [16, 16, 16]
    assert bare.meta["upscale"]["roi_size"] == [64, 64, 64]  # the default (clipped to the volume when run)


@pytest.mark.slow
@pytest.mark.parametrize(("dims", "name"), [(2, "vdsr"), (3, "vdsr"), (2, "espcn"), (3, "espcn"), (2, "lapsrn"),
                                            (2, "srresnet"), (2, "rfdn"), (3, "rfdn")])
def test_a_cards_validation_psnr_is_what_upscale_gives(dims, name, tmp_path, capsys) -> None:
    """Train briefly with a validation volume; then simulate that volume's nominal acquisition,
    upscale it with the run and evaluate: the PSNR equals the card's validation PSNR (0.01 dB).
    Post-upsampling networks too: 30 slices at 4 mm are 8 slices (30 is no multiple of 4), so the
    network's 32-slice grid is resampled onto the 30-slice target in validation as in ``upscale``."""
    import json

    import yaml

    import mrisr

    protocols = __import__("pathlib").Path(__file__).resolve().parents[2] / "protocols"
    spec = yaml.safe_load((protocols / "thick-slice-x4.yaml").read_text())
    spec["network"] = {"vdsr": {"features": 8, "depth": 4}, "espcn": {"scale": 4, "features": [8, 8]},
                       "lapsrn": {"scale": 4, "features": 8, "depth": 2},
                       "srresnet": {"scale": 4, "features": 8, "options": {"blocks": 2, "norm": None}},
                       "rfdn": {"scale": 4, "features": 8, "options": {"blocks": 1}}}[name]
    spec["network"].update(name=name, spatial_dims=dims)
    spec["acquisition"]["slice"]["scale"] = 4.0  # a fixed integer factor, as post-upsampling protocols use
    patch = [32, 32] if dims == 2 else [24, 24, 24]
    spec["train"] = {"patch_size": patch, "batch_size": 4, "epochs": 1, "steps_per_epoch": 3,
                     "learning_rate": 0.01, "pairs_per_volume": 4}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    train_hr = save(phantom(0, seed=0, shape=(40, 36, 32), spacing=(1.0, 1.0, 1.0), dtype="float32"),
                    tmp_path / "train.nii.gz")
    val_hr = save(phantom(1, seed=1, shape=(30, 30, 30), spacing=(1.0, 1.0, 1.0), dtype="float32"),
                  tmp_path / "val.nii.gz")
    run = mrisr.train(tmp_path / "p.yaml", [train_hr], tmp_path / "run", val=[val_hr], device="cpu", progress=False)
    card = json.loads((run / "best" / "model.json").read_text())

    lr, sr = tmp_path / "lr.nii.gz", tmp_path / "sr.nii.gz"
    assert cli.main(["simulate", str(val_hr), "-o", str(lr), "--protocol", str(tmp_path / "p.yaml"), "--quiet"]) == 0
    assert cli.main(["upscale", str(lr), "-o", str(sr), "--model", str(run), "--spacing", "1", "--device", "cpu",
                     "--precision", "float32",  # the card scores float32; bfloat16 is bounded separately
                     "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", "--reference", str(val_hr), "--prediction", str(sr), "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["psnr_db"] == pytest.approx(card["metrics"]["val_psnr"], abs=0.01), (evaluated, card["metrics"])


def test_cpu_plane_batches_are_cache_sized_and_windows_are_not() -> None:
    """2D planes on the CPU: activations of a batch within CPU_PLANE_BATCH_BYTES (measured faster per
    plane than large batches); 3D windows keep the 1 GiB memory budget."""
    from mrisr.infer.runner import CPU_PLANE_BATCH_BYTES, plan_run
    from mrisr.models.loaded import LoadedModel
    from mrisr.nets import VDSR

    net2d = LoadedModel(VDSR(2, features=48, depth=3), {}, "tiny 2D", "cpu")
    run = plan_run(net2d, (197, 233, 189), 2, precision="float32")
    per_plane = 3 * 197 * 189 * 48 * 4
    assert run.batch == max(1, CPU_PLANE_BATCH_BYTES // per_plane) == 1
    small = plan_run(net2d, (64, 64, 64), 2, precision="float32")
    assert small.batch == CPU_PLANE_BATCH_BYTES // (3 * 64 * 64 * 48 * 4) > 1
    net3d = LoadedModel(VDSR(3, features=32, depth=3), {}, "tiny 3D", "cpu")
    windows = plan_run(net3d, (64, 64, 64), 2, roi_size=32, precision="float32")
    assert windows.batch > CPU_PLANE_BATCH_BYTES // (3 * 32**3 * 32 * 4)
