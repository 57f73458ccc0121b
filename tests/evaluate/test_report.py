"""mrisr.evaluate.report: the folder holds index.html whose images exist and are valid PNGs."""

from __future__ import annotations

import html
import json
import re
import zlib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from mrisr.errors import OutputError
from mrisr.evaluate import write_report
from mrisr.volume import Volume, fov_affine
from tests.conftest import phantom

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.src: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.src.append(dict(attrs)["src"] or "")


def _png_size(path: Path) -> tuple[int, int]:
    """Check the signature, the chunk CRCs and that IDAT decompresses; return (width, height)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    pos, kinds, idat = 8, [], b""
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert int.from_bytes(data[pos + 8 + n:pos + 12 + n], "big") == zlib.crc32(kind + body)
        kinds.append(kind)
        idat += body if kind == b"IDAT" else b""
        pos += 12 + n
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    channels = {0: 1, 2: 3}[data[25]]
    assert len(zlib.decompress(idat)) == height * (1 + width * channels)
    return width, height


def _images(folder: Path) -> list[Path]:
    parser = _Images()
    parser.feed((folder / "index.html").read_text(encoding="utf-8"))
    return [folder / src for src in parser.src]


def _triple() -> tuple[Volume, Volume, Volume]:
    hr = phantom(shape=(24, 20, 16), spacing=(1.0, 1.0, 1.0), dtype="float32")
    lr_affine, lr_shape = fov_affine(hr.affine, hr.shape, (1.0, 1.0, 4.0))
    lr_array = np.asarray(hr.array).reshape(1, 24, 20, 4, 4).mean(-1)
    assert tuple(lr_shape) == (24, 20, 4)
    lr = Volume(lr_array, lr_affine)
    sr = hr.replace(array=np.asarray(hr.array) + np.float32(5.0))
    return hr, lr, sr


def test_report_with_baseline(tmp_path: Path) -> None:
    hr, lr, sr = _triple()
    folder = write_report(tmp_path / "report", hr, sr, low_resolution=lr)
    images = _images(folder)
    assert {p.name for p in images} == {"view_0.png", "view_1.png", "view_2.png", "slice_psnr.png"}
    for path in images:
        assert path.is_file()
        width, height = _png_size(path)
        assert width > 0 and height > 0
    text = (folder / "index.html").read_text(encoding="utf-8")
    assert "tricubic" in text and "PSNR" in text
    metrics = json.loads((folder / "metrics.json").read_text())
    assert {"psnr_db", "ssim", "nrmse", "cubic"} <= set(metrics)
    assert metrics["axis"] == 2  # LR's coarse axis
    # nothing else left beside the report (the temporary folder is gone)
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_report_without_baseline_and_force(tmp_path: Path) -> None:
    hr, _, sr = _triple()
    folder = write_report(tmp_path / "r", hr, sr)
    assert all(p.is_file() for p in _images(folder))
    with pytest.raises(OutputError):
        write_report(tmp_path / "r", hr, sr)
    write_report(tmp_path / "r", hr, sr, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(OutputError):
        write_report(other, hr, sr, force=True)
    assert (other / "notes.txt").read_text() == "mine"


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mrisr import cli
    from mrisr.io import save

    hr, lr, sr = _triple()
    paths = [str(save(v, tmp_path / f"{n}.nii.gz")) for v, n in ((hr, "hr"), (lr, "lr"), (sr, "sr"))]
    capsys.readouterr()
    status = cli.main(["evaluate", "--reference", paths[0], "--prediction", paths[2], "--low-resolution", paths[1],
                       "--report", str(tmp_path / "rep"), "--json"])
    out = capsys.readouterr()
    assert status == 0, out.err
    result = json.loads(out.out)
    assert result["report"] == str(tmp_path / "rep") and "cubic" in result
    assert all(p.is_file() for p in _images(tmp_path / "rep"))
    assert cli.main(["evaluate", "--reference", paths[0], "--prediction", paths[2],
                     "--report", str(tmp_path / "rep")]) == 2


def _inputs(folder: Path) -> dict[str, str]:
    """The page's list of inputs: HR, LR, CUBIC, SR -> the path or description it names."""
    text = (folder / "index.html").read_text(encoding="utf-8")
    return {role: html.unescape(value) for role, value in
            re.findall(r"<li>[^<]*\((HR|LR|CUBIC|SR)\): <code>([^<]*)</code></li>", text)}


def test_cli_report_names_its_inputs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mrisr import cli
    from mrisr.io import save

    hr, lr, sr = _triple()
    paths = [str(save(v, tmp_path / f"{n}.nii.gz")) for v, n in ((hr, "hr"), (lr, "lr"), (sr, "sr"))]
    assert cli.main(["evaluate", "--reference", paths[0], "--prediction", paths[2], "--low-resolution", paths[1],
                     "--report", str(tmp_path / "rep")]) == 0, capsys.readouterr().err
    named = _inputs(tmp_path / "rep")
    assert set(named) == {"HR", "LR", "CUBIC", "SR"}
    assert (named["HR"], named["LR"], named["SR"]) == tuple(paths)
    assert "tricubic" in named["CUBIC"] and paths[1] in named["CUBIC"]
    assert "<title>mrisr evaluation: sr.nii.gz</title>" in (tmp_path / "rep" / "index.html").read_text()


def test_report_does_not_name_an_in_memory_result_by_its_input(tmp_path: Path) -> None:
    from mrisr.io import load, save

    hr, lr, sr = _triple()
    hr = load(save(hr, tmp_path / "hr.nii.gz"))
    lr = load(save(lr, tmp_path / "lr.nii.gz"))
    sr = sr.replace(meta=lr.meta)  # as mrisr.infer.upscale returns it: the input's meta, source_paths included
    named = _inputs(write_report(tmp_path / "a", hr, sr, low_resolution=lr))
    assert named["HR"] == str(tmp_path / "hr.nii.gz") and named["LR"] == str(tmp_path / "lr.nii.gz")
    assert str(tmp_path / "lr.nii.gz") != named["SR"] and "in memory" in named["SR"]
    given = {"prediction": "sr_mrisr.nii.gz", "cubic": "tricubic.nii.gz"}
    named = _inputs(write_report(tmp_path / "b", hr, sr, low_resolution=lr, names=given))
    assert (named["SR"], named["CUBIC"]) == ("sr_mrisr.nii.gz", "tricubic.nii.gz")


@pytest.mark.parametrize("order", [0, 13, 30, 47])  # axes permuted and flipped
def test_report_names_the_planes_of_any_voxel_order(tmp_path: Path, order: int) -> None:
    hr = phantom(order=order, shape=(24, 20, 16), spacing=(1.0, 1.0, 1.0), dtype="float32")
    sr = hr.replace(array=np.asarray(hr.array) + np.float32(5.0))
    folder = write_report(tmp_path / "report", hr, sr)
    images = _images(folder)
    assert [p.name for p in images] == ["view_0.png", "view_1.png", "view_2.png", "slice_psnr.png"]
    assert all(_png_size(p)[0] > 0 for p in images)
    text = (folder / "index.html").read_text(encoding="utf-8")
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", text)
    planes = [next(name for name in ("axial", "coronal", "sagittal") if name in c) for c in captions[:3]]
    assert sorted(planes) == ["axial", "coronal", "sagittal"]
    assert all("radiological" in c for c in captions[:3])
    assert "slice index along voxel axis 2" in captions[3] and "mm apart" in captions[3]
    assert "radiological" in text and "colour bar" in text
