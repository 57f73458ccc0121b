"""Training data: simulated pairs, the patch stream and its seeds, loading and bad input."""

from __future__ import annotations

import dataclasses
import itertools
import warnings

import numpy as np
import pytest
import torch
from conftest import phantom, phantom_affine, refused
from torch.utils.data import DataLoader

from mrisr import save
from mrisr.errors import InputError
from mrisr.kspace import degrade
from mrisr.preprocess import intensity_scale, pre_upsample
from mrisr.protocol import Param, Protocol, load_protocol
from mrisr.train.data import (
    PatchPairs,
    load_training_volumes,
    make_pair,
    slice_last,
    stream_generator,
    strip_background,
    validation_pairs,
)
from mrisr.volume import Volume


def _protocol(name: str = "thick-slice-x4", patch: tuple[int, ...] = (16, 16), dims: int | None = None,
              scale: float | None = None) -> Protocol:
    proto = load_protocol(name)
    network = dataclasses.replace(proto.network, spatial_dims=dims if dims is not None else len(patch))
    acquisition = proto.acquisition
    if scale is not None:
        acquisition = dataclasses.replace(
            acquisition, slice=dataclasses.replace(acquisition.slice, scale=Param(scale, (scale, scale))))
    return dataclasses.replace(proto, acquisition=acquisition, network=network,
                               train=dataclasses.replace(proto.train, patch_size=patch))


def _ramp(shape: tuple[int, int, int] = (32, 24, 20)) -> Volume:
    """Values varying only along voxel axis 0, which points (S)uperior: the axial slice axis."""
    affine = phantom_affine(order=32, oblique_deg=0.0, spacing=(1.0, 1.0, 1.0))  # axis 0 -> world z
    ramp = 100.0 + 30.0 * np.arange(shape[0]) + 200.0 * np.sin(np.arange(shape[0]) / 3.0) ** 2
    array = np.broadcast_to(ramp[:, None, None], shape)[None].astype(np.float32)
    return Volume(array, affine)


def _take(stream: PatchPairs, n: int) -> list[dict]:
    return list(itertools.islice(iter(stream), n))


def test_make_pair_input_is_pre_upsampled_lr_on_the_hr_grid_with_one_scale() -> None:
    volume = phantom(shape=(24, 20, 12), spacing=(0.9, 1.2, 3.0))
    proto = load_protocol("brain-t1-axial-5mm")  # thickness in mm, noise, in-plane loss
    params = proto.acquisition.sample(torch.Generator().manual_seed(3))
    model_input, target, info = make_pair(volume, params, torch.Generator().manual_seed(7))

    lr = degrade(volume, params, torch.Generator().manual_seed(7))
    upsampled = pre_upsample(torch.as_tensor(lr.array), lr.affine, volume.affine, volume.shape)
    scale = intensity_scale(upsampled)
    assert model_input.shape == target.shape == (1, *volume.shape)
    assert model_input.dtype == target.dtype == torch.float32
    assert info["scale"] == scale and info["slice_axis"] == lr.meta["degradation"]["slice_axis"] == 2
    assert info["lr_shape"] == lr.shape and lr.shape[2] < volume.shape[2]
    assert torch.equal(model_input, upsampled / scale)
    assert torch.equal(target, torch.as_tensor(volume.array) / scale)  # the input's scale, not the target's own
    assert info["slice_thickness_mm"] == params.thickness_mm and info["params"] is params


def test_2d_patches_span_an_in_plane_axis_and_the_slice_axis_of_a_non_canonical_volume() -> None:
    volume = _ramp()
    samples = _take(PatchPairs([volume], _protocol(patch=(16, 12)), pairs_per_volume=4, seed=1), 24)
    for s in samples:
        assert s["input"].shape == s["target"].shape == (1, 16, 12)
        assert s["slice_axis"] == 0
        for key in ("input", "target"):
            patch = s[key][0]
            assert torch.equal(patch, patch[:1].expand_as(patch))  # constant along the in-plane axis
            assert float(patch[0].max() - patch[0].min()) > 0.1  # varies along the slice axis (last)


def test_3d_patches_have_the_slice_axis_last_and_are_padded_when_the_volume_is_small() -> None:
    volume = _ramp((32, 24, 20))
    samples = _take(PatchPairs([volume], _protocol(patch=(8, 6, 10)), seed=2), 8)
    for s in samples:
        assert s["input"].shape == s["target"].shape == (1, 8, 6, 10)
        patch = s["target"][0]
        assert torch.equal(patch, patch[:1, :1].expand_as(patch))  # varies only along the last axis
    big = _take(PatchPairs([volume], _protocol(patch=(30, 30, 40)), seed=2), 3)  # 24, 20 < 30 and 32 < 40
    for s in big:
        assert s["input"].shape == (1, 30, 30, 40)
        assert float(s["target"][0, :, :, 0].abs().max()) == 0.0  # 4 zero slices of padding each side
    assert slice_last(torch.zeros(1, 5, 6, 7), 0).shape == (1, 6, 7, 5)


def test_a_multichannel_volume_gives_single_channel_patches_of_each_channel() -> None:
    volume = phantom(shape=(24, 20, 12), channels=3)
    samples = _take(PatchPairs([volume], _protocol(patch=(12, 12)), seed=4), 12)
    assert all(s["input"].shape == (1, 12, 12) and s["input"].is_contiguous() for s in samples)


def test_foreground_bias_puts_every_centre_in_the_foreground() -> None:
    array = np.zeros((1, 32, 32, 24), np.float32)
    array[0, 2:10, 20:30, 4:10] = 1000.0
    volume = Volume(array, np.eye(4))  # RAS: axial slices along voxel axis 2
    proto = _protocol(patch=(8, 8), scale=2.0)
    centres = torch.stack([s["center"] for s in _take(PatchPairs([volume], proto, foreground_bias=1.0), 60)])
    lo, hi = torch.tensor([2, 20, 4 - 3]), torch.tensor([10, 30, 10 + 3])  # blurred along the slice axis only
    assert bool(((centres >= lo) & (centres < hi)).all())
    uniform = torch.stack([s["center"] for s in _take(PatchPairs([volume], proto, foreground_bias=0.0), 60)])
    assert float(((uniform >= lo) & (uniform < hi)).all(1).float().mean()) < 0.5


def test_same_seed_same_stream_other_seed_other_stream() -> None:
    volumes = [phantom(shape=(24, 20, 12)), phantom(seed=1, shape=(20, 24, 16))]
    proto = _protocol(patch=(12, 12))
    first = _take(PatchPairs(volumes, proto, seed=5, pairs_per_volume=3), 10)
    again = _take(PatchPairs(volumes, proto, seed=5, pairs_per_volume=3), 10)
    other = _take(PatchPairs(volumes, proto, seed=6, pairs_per_volume=3), 10)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["input"], b["input"]) and torch.equal(a["target"], b["target"])
        assert torch.equal(a["center"], b["center"]) and a["scale"] == b["scale"]
    assert not all(torch.equal(a["input"], b["input"]) for a, b in zip(first, other, strict=True))
    epoch1 = PatchPairs(volumes, proto, seed=5, pairs_per_volume=3)
    epoch1.set_epoch(1)
    assert not torch.equal(_take(epoch1, 1)[0]["input"], first[0]["input"])


def test_dataloader_workers_stream_differently_and_reproducibly() -> None:
    proto = _protocol(patch=(12, 12))
    stream = PatchPairs([phantom(shape=(24, 20, 12))], proto, seed=9, pairs_per_volume=2, length=8)
    assert len(stream) == 8

    def batches() -> list[dict]:
        return list(DataLoader(stream, batch_size=2, num_workers=2))

    run1, run2 = batches(), batches()
    assert len(run1) == 4 and run1[0]["input"].shape == (2, 1, 12, 12)
    for a, b in zip(run1, run2, strict=True):
        assert torch.equal(a["input"], b["input"]) and torch.equal(a["center"], b["center"])
    assert not torch.equal(run1[0]["input"], run1[1]["input"])  # worker 0 and worker 1
    # worker 0's generator is the single-process one: its batches start that stream
    single = torch.stack([s["input"] for s in stream.stream(stream_generator(9, 0, 0, 0), 4)])
    assert torch.equal(torch.cat([run1[0]["input"], run1[2]["input"]]), single)


def test_each_volume_draw_samples_new_acquisition_parameters() -> None:
    proto = _protocol(patch=(8, 8))  # thick-slice-x4: scale in [2, 6] of the input spacing
    volume = phantom(shape=(24, 20, 24), spacing=(1.0, 1.0, 1.0))
    draws = _take(PatchPairs([volume], proto, pairs_per_volume=1, pool_size=1, seed=3), 20)
    thicknesses = {round(s["slice_thickness_mm"], 9) for s in draws}
    assert len(thicknesses) == 20 and min(thicknesses) >= 2.0 and max(thicknesses) <= 6.0
    mixed = _take(PatchPairs([volume], proto, pairs_per_volume=8, pool_size=4, seed=3), 16)  # one batch of 16
    assert len({s["slice_thickness_mm"] for s in mixed}) >= 3


def test_validation_pairs_use_the_nominal_setting(tmp_path) -> None:
    proto = load_protocol("thick-slice-x4")
    path = save(phantom(shape=(24, 20, 16), spacing=(1.0, 1.0, 1.0)), tmp_path / "hr.nii.gz")
    pairs = validation_pairs(load_training_volumes([path]), proto, seed=0)
    assert len(pairs) == 1 and pairs[0]["name"] == str(path)
    pair = pairs[0]
    assert pair["input"].shape == pair["target"].shape == (1, 24, 20, 16)
    assert pair["params"].slice_scale == 4.0 and pair["slice_axis"] == 2
    assert pair["scale"] == pytest.approx(intensity_scale(pair["input"] * pair["scale"]), rel=1e-6)
    again = validation_pairs([path], proto, seed=0)[0]
    assert torch.equal(again["input"], pair["input"])


def test_unreadable_file_is_skipped_with_a_warning_and_nothing_left_is_an_error(tmp_path) -> None:
    good = save(phantom(shape=(24, 20, 12)), tmp_path / "good.nii.gz")
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a scan at all" * 40)
    with pytest.warns(UserWarning, match="broken.nii.gz"):
        volumes = load_training_volumes([good, bad])
    assert len(volumes) == 1 and volumes[0].shape == (24, 20, 12)
    with pytest.warns(UserWarning, match="broken.nii.gz"):
        assert len(load_training_volumes([tmp_path])) == 1  # a folder: its volume files
    with pytest.warns(UserWarning, match="broken.nii.gz"), refused(InputError, "no readable training volume among 1"):
        load_training_volumes([bad])
    with pytest.warns(UserWarning, match="missing.nii"), refused(InputError, "no readable training volume"):
        PatchPairs([tmp_path / "missing.nii"], _protocol())
    with refused(InputError, "empty list"):
        load_training_volumes([])
    with refused(InputError, "empty list"):
        PatchPairs([], _protocol())


def test_patch_size_and_network_dimensions_must_agree() -> None:
    volume = phantom(shape=(24, 20, 12))
    with refused(InputError, r"train\.patch_size .*network\.spatial_dims is 2"):
        PatchPairs([volume], _protocol(patch=(16, 16, 16), dims=2))
    with refused(InputError, r"train\.patch_size .*network\.spatial_dims is 3"):
        PatchPairs([volume], _protocol(patch=(16, 16), dims=3))
    with refused(InputError, r"train\.patch_size .*network\.spatial_dims"):
        validation_pairs([volume], _protocol(patch=(16, 16, 16), dims=2))


def test_volumes_the_acquisition_cannot_degrade_are_named() -> None:
    fine = phantom(shape=(24, 20, 12), spacing=(0.9, 1.2, 8.0))  # 8 mm slices: finer than 4 mm is impossible
    with refused(InputError, "finer than the volume's 8 mm"):
        PatchPairs([fine], _protocol("brain-t1-axial-5mm"))
    flat = Volume(np.ones((1, 16, 16, 1), np.float32), np.eye(4))
    with refused(InputError, "one voxel along the slice axis"):
        PatchPairs([flat], _protocol())
    with refused(InputError, "foreground_bias"):
        PatchPairs([phantom()], _protocol(), foreground_bias=1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PatchPairs([phantom()], _protocol())  # a good volume: no warning


def test_a_dicom_folder_gives_one_volume_per_series(tmp_path) -> None:
    from dicom_factory import write_series

    rng = np.random.default_rng(0)
    for number in (1, 2):
        data = rng.integers(0, 1000, (16, 12, 6)).astype(np.int16)
        write_series(tmp_path / "dicom", data, phantom_affine(oblique_deg=0.0), series_number=number,
                     name_prefix=f"S{number}_")
    volumes = load_training_volumes([tmp_path / "dicom"])
    assert len(volumes) == 2 and all(v.shape == (16, 12, 6) for v in volumes)
    assert len({v.meta["training_source"] for v in volumes}) == 2


def _head(shape: tuple[int, int, int] = (40, 44, 36), spacing: float = 1.0) -> Volume:
    """A bright "brain" ball inside a dark "skull" shell inside a mid "scalp" shell, in air."""
    grid = np.stack(np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * spacing for n in shape], indexing="ij"))
    r = np.sqrt((grid**2).sum(0))
    image = np.where(r < 12, 100.0 + 0.5 * grid[0], 0.0) + np.where((r >= 15) & (r < 18), 60.0, 0.0)
    return Volume(image[None].astype(np.float32), np.diag([spacing, spacing, spacing, 1.0]))


def test_strip_background_zeroes_outside_a_mask_and_keeps_voxels_inside() -> None:
    head = _head()
    kept = []
    for seed in range(4):
        out = strip_background(head, torch.Generator().manual_seed(seed))
        a, b = np.asarray(head.array), np.asarray(out.array)
        inside = b != 0
        assert np.array_equal(b[inside], a[inside]) and np.all(b[~inside] == 0)  # unchanged or zero
        assert np.array_equal(out.affine, head.affine)
        kept.append(inside.sum())
        # the erosion cuts the thin scalp shell off the brain: the largest part (the brain) stays
        assert b[0, 20, 22, 18] == a[0, 20, 22, 18] and b[0, 20, 22, 1] == 0
    assert np.asarray(head.array).max() == 100.0 + 0.5 * 11.5  # the input is not modified
    same = strip_background(head, torch.Generator().manual_seed(0))
    assert np.array_equal(same.array, strip_background(head, torch.Generator().manual_seed(0)).array)


def test_strip_probability_one_gives_zero_backgrounds_and_zero_keeps_the_stream() -> None:
    protocol = _protocol(patch=(16, 16))
    head = _head()
    plain = _take(PatchPairs([head], protocol, seed=3, pairs_per_volume=2, foreground_bias=0.0), 6)
    again = _take(PatchPairs([head], protocol, seed=3, pairs_per_volume=2, foreground_bias=0.0,
                             strip_probability=0.0), 6)
    assert all(torch.equal(a["input"], b["input"]) for a, b in zip(plain, again, strict=True))
    stripped = _take(PatchPairs([head], protocol, seed=3, pairs_per_volume=2, foreground_bias=0.0,
                                strip_probability=1.0), 6)
    # the scalp shell (60) is gone from every stripped target; it shows in the plain stream
    assert all(not torch.any((s["target"] * s["scale"] - 60).abs() < 1e-3) for s in stripped)
    assert any(torch.any((p["target"] * p["scale"] - 60).abs() < 1e-3) for p in plain)
    with pytest.raises(InputError, match="strip_probability"):
        PatchPairs([head], protocol, strip_probability=1.5)
