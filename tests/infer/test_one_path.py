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
