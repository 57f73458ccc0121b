"""Training pairs and patches for post-upsampling networks: the acquired grid in, aligned HR out."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
from conftest import phantom

from mrisr.errors import InputError
from mrisr.protocol import Param, Protocol, load_protocol
from mrisr.train.data import PatchPairs, make_pair, network_factors, validation_pairs
from mrisr.volume import crop


def _protocol(patch: tuple[int, ...], scale: object = 4, name: str = "espcn",
              in_plane_mm: float | None = None) -> Protocol:
    proto = load_protocol("thick-slice-x4")
    acquisition = dataclasses.replace(
        proto.acquisition, slice=dataclasses.replace(proto.acquisition.slice, scale=Param(4.0, (4.0, 4.0))))
    if in_plane_mm is not None:  # in-plane x2 on the acquired grid, slices untouched
        from mrisr.protocol import InPlaneBlock, SliceBlock

        acquisition = dataclasses.replace(
            acquisition, slice=SliceBlock(profile=("rect",), scale=Param(1.0, (1.0, 1.0))),
            in_plane=InPlaneBlock(spacing_mm=Param(in_plane_mm, (in_plane_mm, in_plane_mm)),
                                  reconstruction="acquired"))
    network = dataclasses.replace(proto.network, name=name, spatial_dims=len(patch), features=(4, 4), depth=None,
                                  scale=scale)
    return dataclasses.replace(proto, acquisition=acquisition, network=network,
                               train=dataclasses.replace(proto.train, patch_size=patch))


def _block_mean(image: torch.Tensor, axis: int, factor: int) -> torch.Tensor:
    moved = image.movedim(axis, -1)
    return moved.reshape(*moved.shape[:-1], -1, factor).mean(-1).movedim(-1, axis)


def test_pair_is_the_acquired_grid_and_the_hr_volume_cropped_to_a_multiple() -> None:
    volume = phantom(0, seed=1, shape=(20, 18, 26), spacing=(1.0, 1.0, 1.0), dtype="float32")
    params = _protocol((16, 16)).acquisition.nominal()
    x, y, info = make_pair(volume, params, torch.Generator().manual_seed(0), (1, 4))
    axis = info["grown_axes"][0]
    assert info["factors"][axis] == 4 and sum(info["factors"]) == 6
    assert y.shape[axis + 1] == 24 and x.shape[axis + 1] == 6  # 26 HR slices cropped (centred) to 24
    low = [1 if a == axis else 0 for a in range(3)]
    stop = [n - 1 if a == axis else n for a, n in enumerate(volume.shape)]
    kept = crop(volume, low, stop)
    np.testing.assert_allclose(y.numpy(), np.asarray(kept.array) / info["scale"], rtol=1e-6)
    # rect slices of 4 HR slices, no noise: the input is the block mean of the target
    torch.testing.assert_close(_block_mean(y, axis + 1, 4), x, rtol=0, atol=1e-5)


@pytest.mark.parametrize("patch", [(16, 16), (8, 6, 16)])
def test_patches_are_aligned_acquired_and_hr_boxes(patch: tuple[int, ...]) -> None:
    volume = phantom(0, seed=2, shape=(22, 20, 32), spacing=(1.0, 1.0, 1.0), dtype="float32")
    proto = _protocol(patch)
    stream = PatchPairs([volume], proto, pairs_per_volume=4, seed=3)
    assert stream.layout_factors == ((1, 4) if len(patch) == 2 else (1, 1, 4))
    for sample in itertools.islice(iter(stream), 12):
        assert tuple(sample["target"].shape[1:]) == patch
        assert tuple(sample["input"].shape[1:]) == (*patch[:-1], patch[-1] // 4)
        torch.testing.assert_close(_block_mean(sample["target"], -1, 4), sample["input"], rtol=0, atol=1e-5)


def test_small_volumes_are_padded_alike_on_both_grids() -> None:
    volume = phantom(0, seed=2, shape=(10, 9, 8), spacing=(1.0, 1.0, 1.0), dtype="float32")
    stream = PatchPairs([volume], _protocol((16, 16)), pairs_per_volume=2, seed=1)
    for sample in itertools.islice(iter(stream), 4):
        assert tuple(sample["input"].shape[1:]) == (16, 4) and tuple(sample["target"].shape[1:]) == (16, 16)
        torch.testing.assert_close(_block_mean(sample["target"], -1, 4), sample["input"], rtol=0, atol=1e-5)


def test_in_plane_network_patches_grow_both_in_plane_axes() -> None:
    volume = phantom(0, seed=4, shape=(24, 20, 10), spacing=(1.0, 1.0, 1.0), dtype="float32")
    proto = _protocol((16, 16), scale=[2, 2], in_plane_mm=2.0)
    stream = PatchPairs([volume], proto, pairs_per_volume=2, seed=1)
    for sample in itertools.islice(iter(stream), 4):
        assert tuple(sample["input"].shape[1:]) == (8, 8) and tuple(sample["target"].shape[1:]) == (16, 16)
    pair = validation_pairs([volume], proto)[0]
    slice_axis = pair["slice_axis"]
    for a in range(3):
        ratio = pair["target"].shape[a + 1] / pair["input"].shape[a + 1]
        assert ratio == (1 if a == slice_axis else 2)


def test_patch_sizes_must_divide_by_the_factors_and_pre_networks_have_none() -> None:
    volume = phantom(0, seed=2, shape=(22, 20, 32), spacing=(1.0, 1.0, 1.0), dtype="float32")
    with pytest.raises(InputError, match="multiple of the network's factors"):
        PatchPairs([volume], _protocol((16, 18)))
    assert network_factors(load_protocol("vdsr2d-thick")) is None
    assert network_factors(_protocol((16, 16), scale=[1, 2])) == (1, 2)
