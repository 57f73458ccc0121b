"""The Ray backend on a local Ray instance started by the test gives the local backend's results."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from batch_data import files_on_disk, nifti, series, tiny_model

import mrisr
from mrisr.batch import BatchOptions, run_batch


@pytest.mark.slow
def test_ray_backend_matches_local(tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    root = tmp_path / "root"
    for k in range(3):
        nifti(root / "vols" / f"v{k}.nii.gz", k)
    series(root / "dcm" / "a", 10, number=1)
    staging = tmp_path / "staging"
    series(staging / "s", 11, number=2, description="T2 FLAIR")
    with zipfile.ZipFile(root / "study.zip", "w") as zf:
        for p in sorted(staging.rglob("*.dcm")):
            zf.write(p, p.relative_to(staging).as_posix())
    (root / "bad.nii.gz").write_bytes(b"\x1f\x8b" + b"\x00" * 40)
    card = str(tiny_model(tmp_path / "model"))

    local = run_batch([root], tmp_path / "local", BatchOptions(model=card, workers=0, device="cpu"))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             object_store_memory=80 * 2**20)
    try:
        remote = run_batch([root], tmp_path / "ray", BatchOptions(model=card, workers=2, device="cpu",
                                                                   ray_address="auto"))
    finally:
        ray.shutdown()

    def outcome(summary) -> list[tuple]:  # noqa: ANN001
        return [(i["item"], i["status"], i["reason"], tuple(i["outputs"]), i["key"]) for i in summary.items]

    assert outcome(remote) == outcome(local)
    assert remote.counts == {"done": 5, "failed": 1, "skipped": 0, "pending": 0, "total": 6}
    assert files_on_disk(tmp_path / "ray") == files_on_disk(tmp_path / "local")
    for rel in sorted(files_on_disk(tmp_path / "local")):
        if rel.endswith(".nii.gz"):
            a, b = mrisr.load(tmp_path / "local" / rel), mrisr.load(tmp_path / "ray" / rel)
            np.testing.assert_allclose(b.array, a.array, rtol=1e-4, atol=1e-3)
            np.testing.assert_array_equal(b.affine, a.affine)
    side = json.loads((tmp_path / "ray" / "study" / "s" / "series-2_T2_FLAIR.json").read_text())
    assert side["input"]["path"] == "study.zip/s" and side["device"] == "cpu"
