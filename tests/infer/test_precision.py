"""The CPU's bfloat16 fast path: chosen only where it is faster, bounded in accuracy, recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mrisr
from mrisr.errors import InputError
from mrisr.infer import precision as precision_module
from mrisr.infer import upscale
from mrisr.infer.precision import resolve_precision
from mrisr.models import shipped_models
from mrisr.preprocess import foreground_mask
from mrisr.volume import crop


def test_resolve_precision(monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("float32", cpu) == "float32"
    assert resolve_precision("bfloat16", cpu) == "bfloat16"
    assert resolve_precision("bfloat16", cuda) == "float32"  # CUDA has its own float16 AMP
    with pytest.raises(InputError, match="precision must be one of"):
        resolve_precision("fp8", cpu)
    try:
        for flags, onednn, chosen in ((set(), True, "float32"),  # AVX-512 alone: oneDNN would emulate bf16
                                      ({"avx512_bf16"}, False, "float32"),  # no oneDNN bf16 in this torch
                                      ({"avx512_bf16"}, True, "bfloat16"), ({"amx_bf16"}, True, "bfloat16")):
            monkeypatch.setattr(precision_module, "_cpu_flags", lambda flags=flags: {"avx512f", *flags})
            monkeypatch.setattr(precision_module, "_onednn_supports_bf16", lambda onednn=onednn: onednn)
            precision_module.cpu_has_native_bf16.cache_clear()
            assert resolve_precision("auto", cpu) == chosen, (flags, onednn)
    finally:
        precision_module.cpu_has_native_bf16.cache_clear()


def _psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    err = float(np.mean((a[mask] - b[mask]) ** 2))
    peak = float(np.ptp(b[mask]))
    return 10 * np.log10(peak**2 / err)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vdsr2d-thick", "vdsr3d"])
def test_bfloat16_is_within_0_05_db_of_float32_on_the_sample(name) -> None:
    """A crop of the bundled sample (MNI152, held out of training), 4 mm slices by block average:
    bfloat16 and float32 outputs score within 0.05 dB PSNR of each other against the 1 mm truth."""
    if name not in shipped_models():
        pytest.skip(f"{name} is not shipped")
    from mrisr.demo import SAMPLE

    hr = crop(mrisr.load(SAMPLE), (50, 60, 40), (114, 124, 88))  # 64 x 64 x 48 voxels of 1 mm
    arr = np.asarray(hr.array)
    lr_arr = arr.reshape(1, 64, 64, 12, 4).mean(-1)
    from mrisr.volume import fov_affine

    lr_affine, _ = fov_affine(hr.affine, hr.shape, [1.0, 1.0, 4.0])
    lr = mrisr.Volume(lr_arr.astype(np.float32), lr_affine, {})
    outputs = {p: upscale(lr, name, device="cpu", precision=p) for p in ("float32", "bfloat16")}
    assert outputs["bfloat16"].meta["upscale"]["precision"] == "bfloat16"
    mask = foreground_mask(torch.as_tensor(arr)).numpy()
    scores = {p: _psnr(np.asarray(v.array), arr, mask) for p, v in outputs.items()}
    assert abs(scores["bfloat16"] - scores["float32"]) <= 0.05, scores
