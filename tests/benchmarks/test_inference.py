"""benchmarks/inference.py's counting and reporting, on a tiny network (the benchmark itself runs by hand)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from mrisr import Volume
from mrisr.infer import upscale
from mrisr.models.loaded import LoadedModel
from mrisr.nets import VDSR

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import inference  # noqa: E402  (a script folder, not a package)


def test_flops_and_the_voxel_count_follow_the_network() -> None:
    net = VDSR(2, features=4, depth=3).eval()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert inference.flops_per_voxel(net) == sum(2 * 9 * c.in_channels * c.out_channels for c in convs)
    counter = inference.VoxelCounter(net)
    lr = Volume(np.random.default_rng(0).uniform(0, 100, (1, 8, 6, 3)).astype(np.float32),
                np.diag([1.0, 1.0, 4.0, 1.0]), {})
    upscale(lr, LoadedModel(net, {}, "tiny", "cpu"), device="cpu", precision="float32")
    counter.close()
    assert counter.voxels == 2 * 8 * 6 * 12  # both plane families of the 8 x 6 x 12 grid, each voxel once


def test_the_table_reads_the_rows() -> None:
    rows = [{"model": "m", "dims": 2, "protocol": "p", "precision": p, "input": [8, 8, 2], "output": [8, 8, 8],
             "seconds": s, "mvoxel_per_s": 1.0, "gflop_per_s": 10.0, "conv_peak_gflop_per_s": 20.0,
             "fraction_of_peak": 0.5, "psnr_db": db, "ssim": 0.9} for p, s, db in (("float32", 3.0, 30.0),
                                                                                   ("bfloat16", 1.0, 30.01))]
    text = inference.markdown(rows, [], {"cpu": "test"}, "python benchmarks/inference.py")
    assert "| m | p | bfloat16 | 8x8x8 | 1.0 |" in text and "50 %" in text
    assert "bfloat16 3.00x the speed of float32, PSNR +0.0100 dB" in text


def test_the_rss_and_thread_tables_read_their_rows() -> None:
    rss = [{"model": "m", "precision": "bfloat16", "input": [512, 512, 100], "output": "(1, 512, 512, 500)",
            "seconds": 600.0, "peak_rss_gib": 3.1}]
    threads = [{"model": "m", "precision": "float32", "batch": 16, "threads": t, "planes_per_s": r,
                "speedup": r / 2.0, "plane": [197, 189]} for t, r in ((1, 2.0), (2, 3.8))]
    text = inference.markdown([], rss, {"cpu": "test"}, "python benchmarks/inference.py --rss", threads)
    assert "peak memory of the large cases" in text and "| model | protocol |" not in text
    assert "m bfloat16 512x512x100 -> (1, 512, 512, 500): 3.1 GiB in 600.0 s (goal <= 4 GiB)" in text
    assert "(197x189 planes)" in text and "| m | float32 | 16 | 2 | 3.8 | 1.90x |" in text


def test_the_large_cases_are_those_the_issue_names() -> None:
    """256x256x64 -> 256^3 and 512x512x100 -> 512x512x500 at 1 mm: the slice spacing makes the output."""
    for shape, slice_mm in inference.RSS_CASES:
        assert round(shape[2] * slice_mm) in (256, 500)
