"""upscale(): exact target geometry, the network applied as training lays it out, and the options."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import AXIS_ORDERS, block_average, phantom, planes_pass, refused

from mrisr.errors import InputError
from mrisr.infer import load_model, upscale
from mrisr.models.card import save_checkpoint
from mrisr.nets import VDSR
from mrisr.preprocess import normalize, pre_upsample
from mrisr.volume import Volume


def _net(dims: int, seed: int = 0, depth: int = 3) -> VDSR:
    torch.manual_seed(seed)  # test-only: reproducible tiny untrained networks
    return VDSR(dims, features=4, depth=depth).eval()


def _reference_input(lr: Volume, hr_affine: np.ndarray, hr_shape: tuple[int, int, int]) -> tuple[torch.Tensor, float]:
    up = pre_upsample(torch.as_tensor(np.asarray(lr.array)), lr.affine, hr_affine, hr_shape)
    x, s = normalize(up)
    return x[0], s


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("order", range(len(AXIS_ORDERS)))
def test_geometry_all_axis_orders_2d(order):
    axis = order % 3
    hr = phantom(order, seed=order, shape=(8, 8, 8), spacing=(1.0, 1.0, 1.0))
    lr = block_average(hr, axis)
    out = upscale(lr, _net(2), spacing=1.0, device="cpu")
    assert out.shape == hr.shape
    assert np.abs(out.affine - hr.affine).max() < 1e-4
    assert out.meta["upscale"]["coarse_axis"] == axis
    assert out.array.dtype == np.float32 and np.all(np.isfinite(out.array))
    default = upscale(lr, _net(2), device="cpu")  # default: isotropic at the finest spacing, the same grid
    assert default.shape == hr.shape and np.abs(default.affine - hr.affine).max() < 1e-4


@pytest.mark.parametrize("order", [0, 13, 26, 39, 47])
def test_geometry_axis_orders_3d(order):
    axis = (order + 1) % 3
    shape = [6, 7, 5]
    shape[axis] = 8
    hr = phantom(order, seed=order, shape=tuple(shape), spacing=(1.0, 1.0, 1.0))
    lr = block_average(hr, axis)
    out = upscale(lr, _net(3), spacing=(1.0, 1.0, 1.0), device="cpu", roi_size=4)
    assert out.shape == hr.shape
    assert np.abs(out.affine - hr.affine).max() < 1e-4


# --------------------------------------------------------------------------- what the network sees


def _lr(channels: int = 1, shape=(30, 26, 10), seed: int = 3) -> Volume:
    vol = phantom(4, seed=seed, shape=shape, spacing=(1.0, 1.0, 3.0), dtype="float32", channels=channels)
    return vol.replace(meta={**vol.meta, "source_paths": ["/data/in.nii.gz"]})


def test_sliding_window_with_halo_equals_one_full_volume_pass():
    """3D VDSR of depth 3: receptive radius 3 voxels (float32: exact arithmetic is compared).
    With halo=3 every 24^3 window is computed
    with its full context, so the Gaussian blend averages identical values: the result is one
    full-volume forward pass (in the training layout: in-plane axes, then the coarse axis)."""
    lr = _lr(shape=(40, 34, 12))
    net = _net(3, seed=1)
    out = upscale(lr, net, spacing=1.0, device="cpu", precision="float32", roi_size=24, overlap=0.25, halo=3,
                  sw_batch_size=3)
    assert out.shape == (40, 34, 36)
    x, s = _reference_input(lr, out.affine, out.shape)
    with torch.no_grad():
        ref = net(x[None, None])[0, 0] * s  # coarse axis (Z) is already last
    assert float((torch.as_tensor(out.array[0]) - ref).abs().max()) < 1e-4 * float(ref.abs().max())
    # several windows were used, and without the halo the borders of the windows do differ
    plain = upscale(lr, net, spacing=1.0, device="cpu", precision="float32", roi_size=24, overlap=0.25)
    assert float((torch.as_tensor(plain.array[0]) - ref).abs().max()) > 1e-4 * float(ref.abs().max())
    assert out.meta["upscale"]["halo"] == 3 and out.meta["upscale"]["roi_size"] == [24, 24, 24]


def test_a_window_covering_the_volume_equals_the_full_pass_in_the_training_layout():
    lr = _lr(shape=(12, 10, 4))
    lr = lr.replace(array=np.ascontiguousarray(np.moveaxis(np.asarray(lr.array), 3, 1)),
                    affine=lr.affine[:, [2, 0, 1, 3]])  # the coarse axis is now X (axis 0)
    net = _net(3, seed=2)
    out = upscale(lr, net, device="cpu", precision="float32", roi_size=(64, 64, 64))
    assert out.meta["upscale"]["coarse_axis"] == 0
    x, s = _reference_input(lr, out.affine, out.shape)
    with torch.no_grad():
        ref = net(x.permute(1, 2, 0)[None, None])[0, 0].permute(2, 0, 1) * s
    np.testing.assert_allclose(out.array[0], ref.numpy(), rtol=0, atol=1e-4 * float(ref.abs().max()))


def test_2d_fusion_is_the_mean_of_the_two_plane_families():
    lr = _lr()
    net = _net(2, seed=4)
    fused = upscale(lr, net, spacing=1.0, device="cpu", precision="float32")
    single = upscale(lr, net, spacing=1.0, device="cpu", precision="float32", fuse_orthogonal=False)
    x, s = _reference_input(lr, fused.affine, fused.shape)
    family_x = planes_pass(net, x, 2, 0) * s
    family_y = planes_pass(net, x, 2, 1) * s
    tol = 1e-5 * float(family_x.abs().max())
    np.testing.assert_allclose(fused.array[0], ((family_x + family_y) / 2).numpy(), rtol=0, atol=tol)
    np.testing.assert_allclose(single.array[0], family_x.numpy(), rtol=0, atol=tol)
    assert fused.meta["upscale"]["fused_orthogonal"] and not single.meta["upscale"]["fused_orthogonal"]
    assert not np.allclose(family_x.numpy(), family_y.numpy(), atol=tol)  # the two families differ
    # 2D sliding windows over the planes, with the receptive radius as halo, give the same
    windowed = upscale(lr, net, spacing=1.0, device="cpu", precision="float32", roi_size=(16, 16), halo=3,
                       sw_batch_size=5)
    np.testing.assert_allclose(windowed.array, fused.array, rtol=0, atol=tol)


def test_4d_goes_channel_by_channel():
    lr = _lr(channels=2)
    net = _net(2, seed=5)
    both = upscale(lr, net, spacing=1.0, device="cpu", progress=True)
    for c in range(2):
        one = upscale(lr.replace(array=np.asarray(lr.array)[c : c + 1]), net, spacing=1.0, device="cpu")
        np.testing.assert_allclose(both.array[c], one.array[0], rtol=0, atol=1e-6 * np.abs(one.array).max())
    assert both.n_channels == 2


@pytest.mark.parametrize("dims", [2, 3])
def test_normalisation_scaling_the_input_scales_the_output(dims):
    lr = _lr(shape=(16, 14, 6))
    net = _net(dims, seed=6)
    out = upscale(lr, net, spacing=1.0, device="cpu", roi_size=8 if dims == 3 else None)
    out10 = upscale(lr.replace(array=np.asarray(lr.array) * 10), net, spacing=1.0, device="cpu",
                    roi_size=8 if dims == 3 else None)
    np.testing.assert_allclose(out10.array, 10 * out.array, rtol=0, atol=1e-4 * np.abs(10 * out.array).max())


def test_identity_grid_still_runs_the_network_and_records_what_it_did():
    vol = phantom(9, seed=9, shape=(12, 10, 8), spacing=(1.0, 1.0, 1.0), dtype="int16")
    vol = vol.replace(meta={**vol.meta, "source_paths": ["/data/in.nii.gz"], "source_format": "nifti"})
    with pytest.warns(UserWarning, match="nothing to upscale"):
        out = upscale(vol, _net(2, seed=7), device="cpu")
    assert out.shape == vol.shape
    np.testing.assert_allclose(out.affine, vol.affine, atol=1e-12)
    assert not np.allclose(out.array, vol.array)  # a restoration model changes the image
    assert out.meta["dtype"] == "float32" and out.meta["source_paths"] == ["/data/in.nii.gz"]
    assert out.meta["source_format"] == "nifti"
    record = out.meta["upscale"]
    assert record["model"]["name"] == "vdsr" and record["model"]["config"]["spatial_dims"] == 2
    assert record["device"] == "cpu" and record["target_spacing_mm"] == pytest.approx([1.0, 1.0, 1.0])
    assert record["upsampled_axes"] == [] and record["seconds"] >= 0


def test_a_single_image_with_a_2d_model():
    vol = phantom(0, seed=1, shape=(16, 12, 1), spacing=(1.0, 2.0, 5.0), dtype="float32")
    out = upscale(vol, _net(2), device="cpu")
    assert out.shape == (16, 24, 1)
    assert out.meta["upscale"]["coarse_axis"] == 1


# --------------------------------------------------------------------------- models


def test_load_model_round_trip(tmp_path):
    net = _net(2, seed=8)
    save_checkpoint(net, tmp_path / "run" / "best", {"note": "test"})
    lr = _lr(shape=(12, 10, 4))
    expected = upscale(lr, net, spacing=1.0, device="cpu")
    best = tmp_path / "run" / "best"
    for where in (best, best / "model.json", best / "model.safetensors", tmp_path / "run", str(best)):
        model = load_model(where, "cpu")
        loaded, card = model.net, model.card
        assert card["architecture"]["config"]["spatial_dims"] == 2 and card["note"] == "test"
        for k, v in net.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v)
    out = upscale(lr, tmp_path / "run", spacing=1.0, device="cpu")
    np.testing.assert_array_equal(out.array, expected.array)
    assert out.meta["upscale"]["model"]["sha256"] == card["weights"]["sha256"]
    passed = load_model(net, "cpu")
    assert passed.net is net and passed.card == {}


def test_unknown_names_and_missing_checkpoints(tmp_path):
    with refused(InputError, "no shipped model named 'vdsr-t1'"):
        load_model("vdsr-t1", "cpu")
    with refused(InputError, "checkpoint not found"):
        load_model(tmp_path / "nowhere" / "model.json", "cpu")
    (tmp_path / "bad.json").write_text("{not json")
    with refused(InputError, "not valid JSON"):
        load_model(tmp_path / "bad.json", "cpu")


class _Odd(torch.nn.Module):
    config = {"spatial_dims": 1}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize(
    ("model", "volume", "kwargs", "pattern"),
    [
        (_Odd(), (8, 8, 4), {}, "spatial_dims is 1"),
        ("3d", (8, 8, 1), {}, "3D model needs a 3D volume"),
        ("2d", (8, 8, 1), {"scale": (2, 2, 1)}, "grow in-plane"),
        ("2d", (8, 8, 4), {"overlap": 1.0}, "overlap must be in"),
        ("3d", (8, 8, 4), {"roi_size": (8, 8)}, "roi_size must be 3 positive integers"),
        ("2d", (8, 8, 4), {"halo": -1}, "halo must be"),
        ("2d", (8, 8, 4), {"sw_batch_size": 0}, "sw_batch_size must be"),
        ("2d", (8, 8, 4), {"spacing": 10.0}, "coarser than the input"),
        ("2d", (8, 8, 4), {"device": "tpu"}, "unknown device"),
    ],
)
def test_bad_inputs_are_one_line_errors(model, volume, kwargs, pattern):
    net = {"2d": _net(2), "3d": _net(3)}.get(model, model) if isinstance(model, str) else model
    vol = phantom(0, shape=volume, spacing=(1.0, 1.0, 2.0), dtype="float32")
    with refused(InputError, pattern):
        upscale(vol, net, device=kwargs.pop("device", "cpu"), **kwargs)


def test_no_model_means_the_shipped_default_for_the_spacing(tmp_path, monkeypatch):
    from mrisr.models import registry

    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path)
    thick = phantom(2, seed=5, shape=(12, 10, 4), spacing=(1.0, 1.0, 4.0), dtype="float32")  # through-plane loss
    coarse = phantom(3, seed=6, shape=(8, 7, 4), spacing=(2.0, 2.0, 4.0), dtype="float32")  # in-plane coarse too
    with refused(InputError, "'vdsr2d-thick', is not shipped"):
        upscale(thick, device="cpu")
    save_checkpoint(_net(2, seed=7), tmp_path, {"name": "vdsr2d-thick"}, name="vdsr2d-thick")
    save_checkpoint(_net(3, seed=8), tmp_path, {"name": "vdsr3d"}, name="vdsr3d")
    for volume, dims, seed, name in ((thick, 2, 7, "vdsr2d-thick"), (coarse, 3, 8, "vdsr3d")):
        out = upscale(volume, device="cpu")
        record = out.meta["upscale"]["model"]
        assert record["shipped_name"] == name and out.meta["upscale"]["spatial_dims"] == dims
        assert record["sha256"] == json.loads((tmp_path / f"{name}.json").read_text())["weights"]["sha256"]
        np.testing.assert_array_equal(out.array, upscale(volume, _net(dims, seed=seed), device="cpu").array)
        finest = min(volume.spacing)  # isotropic at the finest input spacing, field of view kept
        assert out.shape == tuple(round(n * s / finest) for n, s in zip(volume.shape, volume.spacing, strict=True))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_it():
    with refused(InputError, "cuda: this machine has 0 CUDA"):
        upscale(_lr(shape=(8, 8, 4)), _net(2), device="cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("dims", [2, 3])
def test_cuda_with_amp_matches_the_cpu(dims):
    lr = _lr(shape=(40, 34, 12))
    net = _net(dims, seed=10)
    cpu = upscale(lr, net, spacing=1.0, device="cpu", roi_size=24 if dims == 3 else None)
    gpu = upscale(lr, net, spacing=1.0, device="cuda", roi_size=24 if dims == 3 else None)
    assert gpu.meta["upscale"]["amp"] and gpu.meta["upscale"]["device"].startswith("cuda")
    np.testing.assert_allclose(gpu.array, cpu.array, rtol=0, atol=1e-2 * np.abs(cpu.array).max())
    assert np.abs(gpu.affine - cpu.affine).max() == 0
