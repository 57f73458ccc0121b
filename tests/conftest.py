"""Shared fixtures: seeded synthetic phantoms with oblique, anisotropic affines,
and the paths of real data that tests skip without."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from mrisr.errors import MrisrError
from mrisr.volume import Volume

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: The 48 signed axis permutations: (permutation of (0, 1, 2), flips (+1/-1) per axis).
AXIS_ORDERS = [
    (perm, flips)
    for perm in itertools.permutations(range(3))
    for flips in itertools.product((1, -1), repeat=3)
]


def needs_shared_data(sub: str = "") -> Path:
    """The path under ../shared/data, or skip the test with a reason."""
    path = SHARED_DATA / sub
    if not path.exists():
        pytest.skip(f"needs {path} (the shared real-data folder), absent here")
    return path


def needs_dcm2niix() -> str:
    """The dcm2niix executable, or skip the test with a reason."""
    local = Path(sys.executable).parent / "dcm2niix"  # the PyPI package's binary in the venv
    exe = str(local) if local.exists() else shutil.which("dcm2niix")
    if exe is None:
        pytest.skip("needs dcm2niix (pip install dcm2niix, or Debian's dcm2niix)")
    return exe


def info_json(capsys: pytest.CaptureFixture, path: Path, *extra: str) -> dict:
    """``mrisr info PATH --json`` through the CLI entry point, parsed."""
    from mrisr import cli

    capsys.readouterr()
    status = cli.main(["info", str(path), "--json", *extra])
    out = capsys.readouterr()
    assert status == 0, out.err
    return json.loads(out.out)


@contextmanager
def refused(error: type[MrisrError], pattern: str) -> Iterator[pytest.ExceptionInfo]:
    """``pytest.raises`` whose ``pattern`` must be in the error's problem (not merely in the path
    it names: pytest's folder names hold the test names, 'tilt' among them), in one line."""
    with pytest.raises(error) as err:
        yield err
    assert re.search(pattern, err.value.problem), err.value.one_line()
    assert "\n" not in str(err.value)


def rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random 3x3 rotation with each Euler angle within +-max_deg."""
    a, b, c = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def phantom_affine(
    order: int = 0,
    seed: int = 0,
    spacing: tuple[float, float, float] = (0.9, 1.2, 3.0),
    oblique_deg: float = 20.0,
) -> np.ndarray:
    """An oblique, anisotropic RAS affine in axis order ``AXIS_ORDERS[order]``.

    Voxel axis ``a`` runs (before the oblique rotation) along world axis
    ``perm[a]`` with sign ``flips[a]`` and spacing ``spacing[a]`` (mm).
    """
    rng = np.random.default_rng(seed)
    perm, flips = AXIS_ORDERS[order]
    base = np.zeros((3, 3))
    for a in range(3):
        base[perm[a], a] = flips[a] * spacing[a]
    affine = np.eye(4)
    affine[:3, :3] = rotation(rng, oblique_deg) @ base
    affine[:3, 3] = rng.uniform(-120, 120, 3)
    return affine


def phantom(
    order: int = 0,
    seed: int = 0,
    shape: tuple[int, int, int] = (24, 20, 12),
    spacing: tuple[float, float, float] = (0.9, 1.2, 3.0),
    dtype: str = "int16",
    channels: int = 1,
) -> Volume:
    """A seeded phantom: an ellipsoid with texture, integer-valued when ``dtype`` is integral."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    inside = (grid**2).sum(0) < 0.8
    data = np.empty((channels, *shape), dtype=np.float32)
    for c in range(channels):
        texture = rng.normal(0, 1, shape)
        values = inside * (800 + 100 * c) + 150 * texture + 200
        if np.dtype(dtype).kind in "iu":
            info = np.iinfo(dtype)
            values = np.clip(np.round(values), max(info.min, -30000), min(info.max, 30000))
        data[c] = values
    meta = {"dtype": dtype, "range": [float(data.min()), float(data.max())]}
    return Volume(data, phantom_affine(order, seed, spacing), meta)


def blob_phantoms(n: int, seed: int, size: int = 32, blobs: int = 6):
    """``(n, 1, size, size)`` sums of Gaussian blobs of random centre, width (1.5-4.5) and amplitude:
    the smooth images the networks' short training tests learn."""
    import torch

    g = torch.Generator().manual_seed(seed)
    grid = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    centre = torch.rand(n, blobs, 2, generator=g) * size
    width = 1.5 + 3.0 * torch.rand(n, blobs, 1, 1, generator=g)
    amp = torch.rand(n, blobs, 1, 1, generator=g) * 2 - 0.5
    dist = (yy - centre[..., 0, None, None]) ** 2 + (xx - centre[..., 1, None, None]) ** 2
    return (amp * torch.exp(-dist / (2 * width**2))).sum(1, keepdim=True)


def onnx_output(net, path: Path, export_shape: tuple[int, ...], x, out_axes: dict | None = None):
    """``net`` exported to ONNX at ``export_shape`` with dynamic batch and spatial axes (``out_axes``:
    the output's names, when they differ), checked by onnx and run in onnxruntime on ``x``; a tensor."""
    import torch

    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    axes = {0: "n", **{2 + i: name for i, name in enumerate("dhw"[3 - (len(export_shape) - 2):])}}
    torch.onnx.export(net, (torch.randn(*export_shape),), str(path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"], dynamic_axes={"x": axes, "y": out_axes or axes})
    onnx.checker.check_model(onnx.load(str(path)))
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})
    return torch.from_numpy(y)


def block_average(hr: Volume, axis: int, factor: int = 4) -> Volume:
    """An LR volume: blocks of ``factor`` slices along ``axis`` averaged, field of view kept."""
    from mrisr.volume import fov_affine, spacing

    arr = np.moveaxis(np.asarray(hr.array), axis + 1, -1)
    arr = arr.reshape(*arr.shape[:-1], arr.shape[-1] // factor, factor).mean(-1)
    arr = np.moveaxis(arr, -1, axis + 1)
    s = spacing(hr.affine).copy()
    s[axis] *= factor
    affine, shape = fov_affine(hr.affine, hr.shape, s)
    assert shape == arr.shape[1:]
    return Volume(arr.astype(np.float32), affine, {**hr.meta, "source_paths": ["/data/in.nii.gz"]})


def planes_pass(net, x, axis: int, partner: int):
    """Independent reference: a 2D network over the planes (partner, axis) of ``x`` (X, Y, Z),
    batched over the third axis (its output grown by the network's factors, if any)."""
    import torch

    rest = 3 - axis - partner
    with torch.no_grad():
        y = net(x.permute(rest, partner, axis)[:, None])[:, 0]
    back = [0, 0, 0]
    back[rest], back[partner], back[axis] = 0, 1, 2
    return y.permute(*back)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip tests marked ``gpu`` when CUDA is absent (torch is imported only if one exists)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (marker gpu); none on this machine")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture
def volumes(tmp_path: Path) -> list[Path]:
    """Two 40x36x32 1 mm phantom volumes saved as NIfTI (training and validation data for engine tests)."""
    import mrisr

    return [mrisr.save(phantom(i, seed=i, shape=(40, 36, 32), spacing=(1.0, 1.0, 1.0), dtype="float32"),
                       tmp_path / f"hr{i}.nii.gz") for i in range(2)]


@pytest.fixture
def models(tmp_path, monkeypatch) -> Path:
    """An empty models folder standing in for the package's (``mrisr.models.registry.MODELS_DIR``)."""
    from mrisr.models import registry

    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setattr(registry, "MODELS_DIR", folder)
    return folder


@pytest.fixture
def read_only_dir(tmp_path) -> Iterator[Path]:
    """A folder nothing can be written in, for root too: a read-only tmpfs mount where this user
    may mount (root in CI), else a folder without write permission (other users); skipped when
    neither holds (root without mount rights)."""
    import os
    import subprocess

    folder = tmp_path / "read-only"
    folder.mkdir()
    mounted = False
    if os.geteuid() == 0:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)],
                                capture_output=True, text=True)
        mounted = result.returncode == 0
        if not mounted:
            pytest.skip(f"root cannot make a read-only folder here (mount: {result.stderr.strip()})")
    else:
        folder.chmod(0o555)
    try:
        yield folder
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)
        else:
            folder.chmod(0o755)


@pytest.fixture
def quiet_itk() -> Iterator[None]:
    """ITK prints its own warnings (non-uniform sampling of rounded positions) on stderr; tests
    that compare with SimpleITK check the geometry instead."""
    import SimpleITK as sitk

    sitk.ProcessObject_SetGlobalWarningDisplay(False)
    yield
    sitk.ProcessObject_SetGlobalWarningDisplay(True)
