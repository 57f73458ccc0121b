"""MONAI transforms over the forward model: MetaTensor in, MetaTensor out, affine right, seeded."""

from __future__ import annotations

import numpy as np
import torch
from conftest import phantom
from monai.data import MetaTensor
from monai.transforms import Compose

from mrisr.kspace.degrade import degrade
from mrisr.kspace.slice_profile import slice_profile
from mrisr.protocol import load_protocol
from mrisr.transforms import (
    Degraded,
    KSpaceCrop,
    RandDegraded,
    RandRicianNoise,
    RandSliceProfile,
    SliceProfile,
    SliceProfiled,
    to_metatensor,
    to_volume,
)
from mrisr.volume import world_corners


def _mt(order: int = 4) -> MetaTensor:
    return to_metatensor(phantom(order, shape=(24, 20, 16), spacing=(0.9, 1.1, 0.8), dtype="float32"))


def _corners(img: MetaTensor) -> np.ndarray:
    return world_corners(img.affine.numpy(), img.shape[1:])


def test_metatensor_round_trip() -> None:
    vol = phantom(2, shape=(6, 5, 4), dtype="float32")
    back = to_volume(to_metatensor(vol))
    np.testing.assert_array_equal(back.array.numpy(), vol.array)
    np.testing.assert_allclose(back.affine, vol.affine)


def test_slice_profile_transform_matches_the_function_and_keeps_the_fov() -> None:
    img = _mt()
    out = SliceProfile(axis=2, thickness_mm=3.2, slice_spacing_mm=3.2, profile="gaussian")(img)
    array, affine = slice_profile(img.as_tensor(), -1, thickness_mm=3.2, slice_spacing_mm=3.2, profile="gaussian",
                                  affine=img.affine.numpy())
    assert isinstance(out, MetaTensor)
    np.testing.assert_allclose(out.as_tensor().numpy(), array.numpy(), atol=1e-6)
    np.testing.assert_allclose(out.affine.numpy(), affine, atol=1e-9)
    np.testing.assert_allclose(_corners(out), _corners(img), atol=1e-4)


def test_kspace_crop_transform_keeps_the_fov() -> None:
    img = _mt(11)
    out = KSpaceCrop(axes=(0, 1), spacing_mm=(1.8, 2.2), output="acquired")(img)
    assert out.shape[1:3] == (12, 10)
    np.testing.assert_allclose(_corners(out), _corners(img), atol=1e-4)


def test_rand_transforms_are_seeded() -> None:
    img = _mt()
    a = RandSliceProfile(axis=1, thickness_mm=(2.0, 4.0), gap_mm=(0.0, 1.0), profiles=("rect", "gaussian"))
    b = RandSliceProfile(axis=1, thickness_mm=(2.0, 4.0), gap_mm=(0.0, 1.0), profiles=("rect", "gaussian"))
    a.set_random_state(5)
    b.set_random_state(5)
    ra, rb = a(img), b(img)
    assert ra.shape == rb.shape and torch.equal(ra.as_tensor(), rb.as_tensor())
    noise = RandRicianNoise(snr=(10.0, 30.0)).set_random_state(1)
    n1 = noise(img)
    noise.set_random_state(1)
    assert torch.equal(n1.as_tensor(), noise(img).as_tensor())
    assert not torch.equal(n1.as_tensor(), noise(img).as_tensor())  # the next draw differs


def test_hr_lr_dictionary_pipeline() -> None:
    acquisition = load_protocol("brain-t1-axial-5mm").acquisition
    pipeline = Compose([RandDegraded(acquisition, hr_key="hr", lr_key="lr")]).set_random_state(3)
    data = pipeline({"hr": _mt(7)})
    hr, lr = data["hr"], data["lr"]
    assert isinstance(lr, MetaTensor) and lr.meta["mrisr_degradation"]["orientation"] == "axial"
    np.testing.assert_allclose(_corners(lr), _corners(hr), atol=1e-4)
    again = Compose([RandDegraded(acquisition)]).set_random_state(3)({"hr": _mt(7)})
    assert torch.equal(again["lr"].as_tensor(), lr.as_tensor())


def test_degraded_equals_degrade() -> None:
    params = load_protocol("thick-slice-x4").acquisition.nominal()
    img = _mt(20)
    out = Degraded(params)({"hr": img})["lr"]
    ref = degrade(to_volume(img), params, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(out.as_tensor().numpy(), np.asarray(ref.array), atol=1e-6)
    np.testing.assert_allclose(out.affine.numpy(), ref.affine, atol=1e-9)
    keyed = SliceProfiled(keys=["hr"], axis=2, thickness_mm=3.2, slice_spacing_mm=3.2)({"hr": img})
    assert keyed["hr"].shape[-1] == 4


def test_keyed_versions_apply_to_every_key() -> None:
    from mrisr.transforms import KSpaceCropd, PartialFourierd, RicianNoised

    data = {"a": _mt(1), "b": _mt(2)}
    cropped = KSpaceCropd(keys=["a", "b"], axes=(0, 1), spacing_mm=(1.8, 2.2), output="acquired")(data)
    assert cropped["a"].shape[1:3] == (12, 10) and cropped["b"].shape[1:3] == (12, 10)
    np.testing.assert_allclose(_corners(cropped["b"]), _corners(data["b"]), atol=1e-4)
    pf = PartialFourierd(keys=["a"], axis=0, fraction=0.75)(data)
    assert pf["a"].shape == data["a"].shape and not torch.equal(pf["a"].as_tensor(), data["a"].as_tensor())
    assert torch.equal(pf["b"].as_tensor(), data["b"].as_tensor())
    n1 = RicianNoised(keys=["a"], snr=20.0).set_random_state(4)(data)["a"]
    n2 = RicianNoised(keys=["a"], snr=20.0).set_random_state(4)(data)["a"]
    assert torch.equal(n1.as_tensor(), n2.as_tensor()) and not torch.equal(n1.as_tensor(), data["a"].as_tensor())
