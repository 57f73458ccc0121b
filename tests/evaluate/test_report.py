"""mrisr.evaluate.report: the folder holds index.html whose images exist and are valid PNGs."""

from __future__ import annotations

import json
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
