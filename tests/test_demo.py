"""The demo (mrisr/demo.py, ``mrisr demo``, ``make demo``).

Fast tests run :func:`mrisr.demo.run_demo` on a small crop of the sample with an untrained tiny
network standing in for the default model. The ``slow`` test runs ``make demo`` in a clean clone
of the repository, as a new user would (it builds its own .venv).
"""

from __future__ import annotations

import functools
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, refused

import mrisr
from mrisr import cli, demo
from mrisr.errors import OutputError
from mrisr.models.card import save_checkpoint
from mrisr.nets import VDSR
from mrisr.preprocess import pre_upsample
from mrisr.volume import crop

#: The SR NIfTI's field of view must match the sample's to this (mm).
FOV_ATOL_MM = 1e-3


def fov_corners(path: Path) -> np.ndarray:
    """The 8 outer-face corners (mm) of a NIfTI's grid, read with nibabel (not mrisr's reader)."""
    image = nib.load(str(path))
    shape = np.asarray(image.shape[:3])
    faces = np.array([[-0.5 if c == "0" else n - 0.5 for c, n in zip(f"{i:03b}", shape, strict=True)]
                      for i in range(8)])
    return (image.affine @ np.c_[faces, np.ones(8)].T).T[:, :3]


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 32 x 40 x 32 mm crop of the sample brain (1 mm voxels) around its centre."""
    small = crop(mrisr.load(demo.SAMPLE), (82, 96, 78), (114, 136, 110))
    return mrisr.save(small.replace(meta={}), tmp_path_factory.mktemp("sample") / "small.nii.gz")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 2D VDSR (4 features, 3 layers): the mechanics, not the quality."""
    return save_checkpoint(VDSR(2, features=4, depth=3), tmp_path_factory.mktemp("model"), {"note": "untrained"})


@pytest.fixture
def default_is_tiny(monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> list:
    """The demo's default model (``model=None``) becomes the tiny network; records the models asked for."""
    asked: list = []
    real = demo.upscale

    def upscale(volume, model=None, **kwargs):  # noqa: ANN001, ANN003, ANN202
        asked.append(model)
        return real(volume, tiny_model if model is None else model, **kwargs)

    monkeypatch.setattr(demo, "upscale", upscale)
    return asked


def test_demo_writes_everything_with_the_default_model(tmp_path: Path, small_sample: Path,
                                                       default_is_tiny: list) -> None:
    lines: list[str] = []
    result = demo.run_demo(tmp_path / "out", sample=small_sample, device="cpu", log=lines.append)
    out = tmp_path / "out"
    assert default_is_tiny == [None]  # the demo asks for the default model
    assert sorted(p.name for p in out.iterdir()) == sorted(demo.OUTPUTS)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left
    assert result.files["report"] == out / "report" / "index.html"
    assert {"view_0.png", "view_1.png", "view_2.png", "slice_psnr.png", "index.html"} <= {
        p.name for p in (out / "report").iterdir()}

    metrics = json.loads((out / "metrics.json").read_text())
    for entry in (metrics, metrics["cubic"]):
        assert {"psnr_db", "ssim", "nrmse", "slice_psnr_db"} <= set(entry)
    assert metrics["axis"] == 2 and len(metrics["slice_psnr_db"]) == 32  # the slice axis of the crop
    assert metrics["psnr_db"] == pytest.approx(result.metrics["psnr_db"])
    record = json.loads((out / "demo.json").read_text())
    assert record["generator"] == "mrisr demo" and record["model"]["requested"] == "default"
    assert record["protocol"]["name"] == demo.PROTOCOL and record["protocol"]["nominal"]
    assert record["metrics"]["tricubic"]["psnr_db"] == pytest.approx(metrics["cubic"]["psnr_db"])

    lr = mrisr.load(out / "lr_thick_slices.nii.gz")
    assert lr.shape == (32, 40, 8) and np.allclose(lr.spacing, (1, 1, 4))
    assert np.abs(fov_corners(out / "sr_mrisr.nii.gz") - fov_corners(small_sample)).max() < FOV_ATOL_MM
    assert np.abs(fov_corners(out / "tricubic.nii.gz") - fov_corners(small_sample)).max() < FOV_ATOL_MM
    dicom = mrisr.load(out / "sr_mrisr_dicom")
    assert dicom.shape == (32, 40, 32) and len(list((out / "sr_mrisr_dicom").iterdir())) == 32
    assert np.abs(np.sort(dicom.corners, 0) - np.sort(fov_corners(small_sample), 0)).max() < FOV_ATOL_MM

    text = "\n".join(lines)
    for word in ("tricubic", "PSNR", "SSIM", str(out), *demo.OUTPUTS):
        assert word in text


def test_demo_refuses_an_existing_folder_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    missing = tmp_path / "no-such-sample.nii.gz"  # an input error, were the sample read first
    with refused(OutputError, "already exists"):
        demo.run_demo(out, sample=missing, log=None)
    with refused(OutputError, "not a folder that mrisr demo wrote"):
        demo.run_demo(out, sample=missing, force=True, log=None)
    with refused(OutputError, "current folder"):
        demo.run_demo(Path.cwd(), sample=missing, force=True, log=None)


def test_force_replaces_an_earlier_demo_and_only_that(tmp_path: Path, small_sample: Path,
                                                      default_is_tiny: list) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "demo.json").write_text(json.dumps({"generator": "mrisr demo"}))  # an earlier demo's folder
    (out / "metrics.json").write_text("{}")
    demo.run_demo(out, sample=small_sample, device="cpu", force=True, log=None)
    assert "cubic" in json.loads((out / "metrics.json").read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old folder is gone, no leftovers
    (out / "mine.txt").write_text("not the demo's")  # a folder holding more than the demo writes
    with refused(OutputError, "not a folder that mrisr demo wrote"):
        demo.run_demo(out, sample=small_sample, force=True, log=None)
    assert (out / "mine.txt").exists()


def test_a_failed_demo_leaves_nothing(tmp_path: Path, small_sample: Path, monkeypatch: pytest.MonkeyPatch,
                                      tiny_model: Path) -> None:
    def failing_report(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError("disk full")

    monkeypatch.setattr(demo, "write_report", failing_report)
    with pytest.raises(OSError):
        demo.run_demo(tmp_path / "out", sample=small_sample, model=tiny_model, device="cpu", log=None)
    assert list(tmp_path.iterdir()) == []


def test_cli_demo_one_line_error_and_summary(tmp_path: Path, small_sample: Path, default_is_tiny: list,
                                            monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["demo", "--out", str(out)]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("mrisr: error:") and "--force" in err and "\n" not in err

    monkeypatch.setattr(demo, "run_demo", functools.partial(demo.run_demo, sample=small_sample))
    assert cli.main(["demo", "--out", str(tmp_path / "new"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "mrisr super-resolution" in printed and f"wrote {tmp_path / 'new'}/" in printed


def test_cli_demo_refuses_a_read_only_folder_at_once(read_only_dir: Path, small_sample: Path, default_is_tiny: list,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(demo, "run_demo", functools.partial(demo.run_demo, sample=small_sample))  # fast were it to run
    start = time.perf_counter()
    status = cli.main(["demo", "--out", str(read_only_dir / "demo"), "--device", "cpu"])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert status == cli.EXIT_BAD_INPUT, err
    assert err.startswith("mrisr: error:") and "\n" not in err and "cannot write" in err
    assert str(read_only_dir / "demo") in err
    assert default_is_tiny == [] and seconds < 2.0  # found before any compute
    assert not list(read_only_dir.iterdir())


def test_demo_refuses_an_unwritable_folder_before_reading_the_sample(read_only_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-sample.nii.gz"  # an input error, were the sample read first
    with refused(OutputError, "cannot write"):
        demo.run_demo(read_only_dir / "demo", sample=missing, log=None)
    with refused(OutputError, "cannot write"):
        demo.run_demo(read_only_dir / "deeper" / "demo", sample=missing, log=None)


class _Stop(Exception):
    """Ends a demo at its upscale step."""


@pytest.mark.parametrize("log", [True, False])
def test_demo_shows_the_upscale_progress_when_it_logs(tmp_path: Path, small_sample: Path,
                                                      monkeypatch: pytest.MonkeyPatch, log: bool) -> None:
    calls: list[dict] = []

    def upscale(volume, model=None, **kwargs):  # noqa: ANN001, ANN003, ANN202
        calls.append(kwargs)
        raise _Stop

    monkeypatch.setattr(demo, "upscale", upscale)
    with pytest.raises(_Stop):
        demo.run_demo(tmp_path / "out", sample=small_sample, device="cpu", log=[].append if log else None)
    assert calls[0].get("progress") is log  # a bar over planes (2D) or windows (3D), with ETA, on stderr


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, small_sample: Path,
             tiny_model: Path) -> tuple[demo.DemoResult, list[str]]:
    """One demo of the small sample with the tiny model: its result and its log lines."""
    lines: list[str] = []
    result = demo.run_demo(tmp_path_factory.mktemp("demo") / "out", sample=small_sample, model=tiny_model,
                           device="cpu", log=lines.append)
    return result, lines


def test_demo_logs_each_step_with_its_time(demo_run: tuple[demo.DemoResult, list[str]]) -> None:
    result, lines = demo_run
    steps = [("simulating", "simulated"), ("upscaling", "upscaled"), ("interpolating", "interpolated"),
             ("scoring", "scored"), ("writing", "wrote"), ("drawing", "drew")]
    position = 0
    for doing, done in steps:
        begin = next(i for i, line in enumerate(lines) if line.startswith(doing + " "))
        end = next(i for i, line in enumerate(lines) if line.startswith(done + " "))
        assert position <= begin < end, (doing, lines)  # in order, each said before it runs
        assert lines[begin].endswith("..."), lines[begin]
        assert re.search(r"\(\d+\.\d s\)$", lines[end]), lines[end]  # and timed when done
        position = end
    assert {"load", "simulate", "upscale", "tricubic", "evaluate", "write", "report", "total"} <= set(result.seconds)


def test_demo_report_names_the_files_it_compares(demo_run: tuple[demo.DemoResult, list[str]],
                                                 small_sample: Path) -> None:
    result, _ = demo_run
    text = result.files["report"].read_text(encoding="utf-8")
    named = {role: html.unescape(value) for role, value in
             re.findall(r"<li>[^<]*\((HR|LR|CUBIC|SR)\): <code>([^<]*)</code></li>", text)}
    assert named == {"HR": str(small_sample), "LR": str(result.files["lr_thick_slices.nii.gz"]),
                     "CUBIC": str(result.files["tricubic.nii.gz"]), "SR": str(result.files["sr_mrisr.nii.gz"])}
    assert all(Path(path).is_file() for path in named.values())
    assert "<title>mrisr evaluation: sr_mrisr.nii.gz</title>" in text


def test_demo_tricubic_baseline_of_a_magnitude_image_is_not_negative(tmp_path: Path, tiny_model: Path) -> None:
    array = np.zeros((1, 16, 16, 32), np.float32)
    array[:, 4:12, 4:12, 9:23] = 1000.0  # sharp edges across the 4 mm slices: the cubic kernel overshoots
    sample = mrisr.save(mrisr.Volume(array, np.diag([1.0, 1.0, 1.0, 1.0])), tmp_path / "edges.nii.gz")
    demo.run_demo(tmp_path / "out", sample=sample, model=tiny_model, device="cpu", log=None)
    lr = mrisr.load(tmp_path / "out" / "lr_thick_slices.nii.gz")
    unclamped = pre_upsample(torch.as_tensor(np.asarray(lr.array)), lr.affine, np.eye(4), (16, 16, 32))
    assert float(unclamped.min()) < -1.0  # what the baseline was before
    cubic = np.asarray(mrisr.load(tmp_path / "out" / "tricubic.nii.gz").array)
    assert cubic.min() >= 0.0 and cubic.max() > 900.0


# --------------------------------------------------------------------------- make demo, clean clone


def _torch_spec() -> str:
    """The TORCH spec the clone's .venv gets: $TORCH (as CI passes to make), else this torch's release."""
    if os.environ.get("TORCH"):
        return os.environ["TORCH"]
    import torch

    return f"torch=={torch.__version__.split('+')[0]}"


def _committed(pattern: str) -> list[str]:
    done = subprocess.run(["git", "-C", str(REPO), "ls-files", pattern], capture_output=True, text=True)
    return done.stdout.split() if done.returncode == 0 else []


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_make_demo_from_a_clean_clone(tmp_path: Path) -> None:
    for tool in ("git", "make"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    if not (REPO / ".git").exists():
        pytest.skip("needs the repository's git checkout (to clone it)")
    if not _committed("mrisr/models/*.safetensors"):
        pytest.skip("no default model is committed yet (mrisr/models/*.safetensors)")
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest",
                            str(tmp_path / "probe"), "tqdm"], capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        pytest.skip(f"pip cannot fetch packages here: {probe.stderr.strip().splitlines()[-1:]}")

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    start = time.perf_counter()
    done = subprocess.run(["make", "demo", f"TORCH={_torch_spec()}", f"PYTHON={sys.executable}"], cwd=clone,
                          env=env, capture_output=True, text=True, timeout=1700)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, f"make demo failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    print(f"make demo from a clean clone: {seconds:.0f} s (set-up included)\n{done.stdout[-2000:]}")

    out = clone / "demo-output"
    assert sorted(p.name for p in out.iterdir()) == sorted(demo.OUTPUTS)
    assert (out / "report" / "index.html").is_file() and list((out / "report").glob("view_*.png"))
    assert list((out / "sr_mrisr_dicom").glob("IM_*.dcm"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["psnr_db"] > metrics["cubic"]["psnr_db"], metrics
    sample = clone / "mrisr" / "data" / "sample_t1_mni152.nii.gz"
    assert np.abs(fov_corners(out / "sr_mrisr.nii.gz") - fov_corners(sample)).max() < FOV_ATOL_MM
    assert "tricubic" in done.stdout and "demo-output/" in done.stdout

