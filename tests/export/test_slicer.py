"""3D Slicer scene bundles (.mrb): round trip through zip, ElementTree and SimpleITK, the MRML's
structure against a checked-in reference scene (tests/export/reference_scene.mrml, which cites the
Slicer files it follows), and the CLI (export-slicer, upscale --format mrb)."""

from __future__ import annotations

import json
import re
import struct
import xml.etree.ElementTree as ET
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import phantom, refused

import mrisr
from mrisr.cli import main
from mrisr.errors import InputError, OutputError
from mrisr.export import write_mrb
from mrisr.export.slicer import DIVERGING, GREY, window_level
from mrisr.io.lps import flip_lps_ras
from mrisr.volume import Volume, fov_affine

REFERENCE = Path(__file__).with_name("reference_scene.mrml")
#: "role:id;" repeated: the syntax of MRML's references attribute.
REFERENCES = re.compile(r"^(?:[A-Za-z][A-Za-z0-9_]*:[^;:\s]+;)+$")
ATOL_MM = 1e-4


def _straight() -> Volume:
    """An axis-aligned phantom (LPS-like voxel order) beside conftest's oblique ones."""
    base = phantom(2, seed=3, shape=(20, 16, 10))
    affine = np.diag([-1.1, -0.9, 2.5, 1.0])
    affine[:3, 3] = [30.0, 12.5, -40.0]
    return base.replace(affine=affine)


def _parse_references(text: str) -> dict[str, str]:
    assert REFERENCES.match(text), text
    return dict(part.split(":", 1) for part in text.split(";") if part)


def _ras_from_mrml(node: ET.Element) -> np.ndarray:
    """The RAS voxel -> mm affine a Volume node's attributes describe (vtkMRMLVolumeNode's rule)."""
    directions = np.array(node.get("ijkToRASDirections").split(), dtype=float).reshape(3, 3)
    spacing = np.array(node.get("spacing").split(), dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = directions * spacing
    affine[:3, 3] = np.array(node.get("origin").split(), dtype=float)
    return affine


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert (depth, colour) == (8, 0)
    idat = data[data.index(b"IDAT") + 4: data.index(b"IEND") - 8]
    assert len(zlib.decompress(idat)) == height * (width + 1)
    return width, height


def check_scene(mrb: Path, sources: dict[str, Volume], tmp: Path) -> ET.Element:
    """Unzip ``mrb`` and check it against ``sources`` (node name -> the volume it must hold)."""
    scene = mrb.stem
    with zipfile.ZipFile(mrb) as bundle:
        members = bundle.namelist()
        assert f"{scene}/{scene}.mrml" in members, members
        assert all(m.startswith(f"{scene}/") for m in members)
        bundle.extractall(tmp)
    mrml = tmp / scene / f"{scene}.mrml"
    root = ET.parse(mrml).getroot()
    assert root.tag == "MRML" and root.get("version", "").startswith("Slicer")
    nodes = {}
    for element in root:
        assert element.get("id") not in nodes, f"duplicate id {element.get('id')}"
        nodes[element.get("id")] = element
    # every reference resolves
    for element in root:
        if element.get("references") is not None:
            for role, ref in _parse_references(element.get("references")).items():
                assert ref in nodes, f"{element.get('id')} {role} -> {ref} missing"
        for attribute in ("backgroundVolumeID", "foregroundVolumeID", "labelVolumeID"):
            if element.get(attribute):
                assert element.get(attribute) in nodes
    volumes = {v.get("name"): v for v in root.iter("Volume")}
    assert set(volumes) == set(sources)
    for name, node in volumes.items():
        refs = _parse_references(node.get("references"))
        display, storage = nodes[refs["display"]], nodes[refs["storage"]]
        assert display.tag == "VolumeDisplay" and storage.tag == "VolumeArchetypeStorage"
        file = storage.get("fileName")
        assert not Path(file).is_absolute() and file.startswith("Data/") and file.endswith(".nrrd")
        path = mrml.parent / file
        assert path.is_file(), file
        source = sources[name]
        # the MRML holds RAS, as Slicer writes it
        np.testing.assert_allclose(_ras_from_mrml(node), source.affine, atol=ATOL_MM)
        # the NRRD holds the same geometry in LPS, and the same values
        image = sitk.ReadImage(str(path))
        lps = flip_lps_ras(source.affine)
        spacing = np.linalg.norm(lps[:3, :3], axis=0)
        np.testing.assert_allclose(image.GetSpacing(), spacing, atol=ATOL_MM)
        np.testing.assert_allclose(image.GetOrigin(), lps[:3, 3], atol=ATOL_MM)
        np.testing.assert_allclose(np.array(image.GetDirection()).reshape(3, 3), lps[:3, :3] / spacing,
                                   atol=ATOL_MM)
        header = path.read_bytes()[:2000]
        assert b"space: left-posterior-superior" in header
        values = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0))
        np.testing.assert_array_equal(values, np.asarray(source.array[0]))
        assert display.get("autoWindowLevel") == "0"
        float(display.get("window")), float(display.get("level"))
    composites = list(root.iter("SliceComposite"))
    assert sorted(c.get("layoutName") for c in composites) == ["Green", "Red", "Yellow"]
    for composite in composites:
        assert composite.get("linkedControl") == "1"
        refs = _parse_references(composite.get("references"))
        assert refs["backgroundVolume"] == composite.get("backgroundVolumeID")
        assert refs.get("foregroundVolume", "") == composite.get("foregroundVolumeID")
    assert len(list(root.iter("Layout"))) == 1
    return root


def _by_name(root: ET.Element, name: str) -> ET.Element:
    return next(v for v in root.iter("Volume") if v.get("name") == name)


def _display(root: ET.Element, name: str) -> ET.Element:
    ref = _parse_references(_by_name(root, name).get("references"))["display"]
    return next(e for e in root if e.get("id") == ref)


def test_round_trip_two_phantoms(tmp_path: Path) -> None:
    low, high = _straight(), phantom(7, seed=4)  # axis-aligned and oblique, different grids
    out = write_mrb(tmp_path / "compare.mrb", [low, high], names=["input", "result"])
    assert out == tmp_path / "compare.mrb"
    root = check_scene(out, {"input": low, "result": high}, tmp_path / "x")
    composite = next(root.iter("SliceComposite"))
    assert composite.get("backgroundVolumeID") == _by_name(root, "input").get("id")
    assert composite.get("foregroundVolumeID") == _by_name(root, "result").get("id")
    assert float(composite.get("foregroundOpacity")) == 0.5
    display = _display(root, "result")
    assert display.get("colorNodeID") == GREY
    lo, hi = np.percentile(np.asarray(high.array), [1, 99])
    assert float(display.get("window")) == pytest.approx(hi - lo, rel=1e-5)
    assert float(display.get("level")) == pytest.approx((hi + lo) / 2, rel=1e-5)
    width, height = _png_size((tmp_path / "x" / "compare" / "compare.png").read_bytes())
    assert max(width, height) == 256 and min(width, height) >= 1


def test_structure_matches_the_reference_scene(tmp_path: Path) -> None:
    reference = ET.parse(REFERENCE).getroot()
    out = write_mrb(tmp_path / "s.mrb", {"a": _straight(), "b": phantom(3, seed=1)}, thumbnail=False)
    with zipfile.ZipFile(out) as bundle:
        assert bundle.namelist() == ["s/s.mrml", "s/Data/a.nrrd", "s/Data/b.nrrd"]
        ours = ET.fromstring(bundle.read("s/s.mrml"))
        text = bundle.read("s/s.mrml").decode("utf-8")
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert ours.tag == reference.tag and set(ours.attrib) == set(reference.attrib)
    assert ours.get("version") == reference.get("version")
    assert {e.tag for e in ours} == {e.tag for e in reference}
    required = {e.tag: set(e.attrib) for e in reference}
    for element in ours:
        missing = required[element.tag] - set(element.attrib)
        assert not missing, f"{element.tag} lacks {missing}"
        if element.get("references") is not None:
            assert REFERENCES.match(element.get("references"))
    for tag in required:  # the same id scheme: the tag's class name and a number or singleton tag
        prefix = re.sub(r"(\d+|Red)$", "", next(reference.iter(tag)).get("id"))
        assert all(e.get("id").startswith(prefix) for e in ours.iter(tag)), tag
    for element in reference:
        if element.get("references") is not None:
            assert REFERENCES.match(element.get("references"))


def test_difference_on_the_same_grid_and_refused_across_grids(tmp_path: Path) -> None:
    before = phantom(4, seed=5)
    after = before.replace(array=np.asarray(before.array) * 1.5 + 10)
    out = write_mrb(tmp_path / "d.mrb", {"before": before, "after": after}, difference=True)
    diff = before.replace(array=np.asarray(after.array) - np.asarray(before.array))
    root = check_scene(out, {"before": before, "after": after, "difference": diff}, tmp_path / "x")
    display = _display(root, "difference")
    assert display.get("colorNodeID") == DIVERGING and float(display.get("level")) == 0
    assert float(display.get("window")) == pytest.approx(window_level(np.asarray(diff.array), True)[0])
    assert _display(root, "after").get("colorNodeID") == GREY
    moved = after.replace(affine=after.affine @ np.diag([1, 1, 1.01, 1]))
    with refused(InputError, "different grids"):
        write_mrb(tmp_path / "e.mrb", [before, moved], difference=True)
    assert not (tmp_path / "e.mrb").exists()
    with refused(InputError, "two distinct volumes"):
        write_mrb(tmp_path / "e.mrb", [before], difference=True)


def test_names_are_escaped_ids_unique_files_portable(tmp_path: Path) -> None:
    names = ['T1 <pre> & "post"', "T1 <pre> & 'post'", "résultat/ü", "..."]
    vols = [phantom(i, seed=i, shape=(8, 6, 4)) for i in range(4)]
    out = write_mrb(tmp_path / "names.mrb", vols, names=names, foreground=1, background="résultat/ü")
    root = check_scene(out, dict(zip(names, vols, strict=True)), tmp_path / "x")
    files = [s.get("fileName") for s in root.iter("VolumeArchetypeStorage")]
    assert len({f.lower() for f in files}) == 4
    assert all(re.fullmatch(r"Data/[A-Za-z0-9._-]+\.nrrd", f) for f in files), files
    composite = next(root.iter("SliceComposite"))
    assert composite.get("foregroundVolumeID") == _by_name(root, names[1]).get("id")
    assert composite.get("backgroundVolumeID") == _by_name(root, names[2]).get("id")


def test_bad_arguments_are_one_line_errors(tmp_path: Path) -> None:
    vol = phantom(shape=(8, 6, 4))
    with refused(InputError, "unique"):
        write_mrb(tmp_path / "a.mrb", [vol, vol], names=["x", "x"])
    with refused(InputError, "names given twice"):
        write_mrb(tmp_path / "a.mrb", {"x": vol}, names=["y"])
    with refused(InputError, "no volumes"):
        write_mrb(tmp_path / "a.mrb", [])
    with refused(InputError, "channels"):
        write_mrb(tmp_path / "a.mrb", [phantom(shape=(8, 6, 4), channels=2)])
    with refused(InputError, "none of the volumes"):
        write_mrb(tmp_path / "a.mrb", [vol], foreground="nope")
    with refused(OutputError, "must end in .mrb"):
        write_mrb(tmp_path / "a.zip", [vol])
    write_mrb(tmp_path / "a.mrb", [vol])
    with refused(OutputError, "already exists"):
        write_mrb(tmp_path / "a.mrb", [vol])
    write_mrb(tmp_path / "a.mrb", [vol], force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mrb"]  # no temporary file left


def _run(capsys, *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_export_slicer(capsys, tmp_path: Path) -> None:
    a, b = _straight(), phantom(9, seed=6)
    pa, pb = mrisr.save(a, tmp_path / "lr.nii.gz"), mrisr.save(b, tmp_path / "sr.nrrd")
    loaded = {"lr": mrisr.load(pa), "sr": mrisr.load(pb)}
    code, out, err = _run(capsys, "export-slicer", pa, pb, "-o", tmp_path / "scene.mrb")
    assert code == 0, err
    assert "scene.mrb" in out
    check_scene(tmp_path / "scene.mrb", loaded, tmp_path / "x")
    code, _, err = _run(capsys, "export-slicer", pa, pb, "-o", tmp_path / "scene.mrb")
    assert code == 2 and "already exists" in err and "--force" in err and err.count("\n") == 1
    code, _, err = _run(capsys, "export-slicer", pa, pb, "-o", tmp_path / "scene.mrb", "--force",
                        "--names", "input", "result")
    assert code == 0, err
    check_scene(tmp_path / "scene.mrb", {"input": loaded["lr"], "result": loaded["sr"]}, tmp_path / "y")
    code, _, err = _run(capsys, "export-slicer", pa, pb, "-o", tmp_path / "d.mrb", "--difference")
    assert code == 2 and "different grids" in err and err.count("\n") == 1
    code, _, err = _run(capsys, "export-slicer", pa, "-o", tmp_path / "scene.zip")
    assert code == 2 and ".mrb" in err and err.count("\n") == 1


@pytest.fixture
def model_card(tmp_path: Path) -> Path:
    import torch

    from mrisr.models.card import save_checkpoint
    from mrisr.nets import VDSR

    torch.manual_seed(0)
    return save_checkpoint(VDSR(2, features=4, depth=3), tmp_path / "model", {})


def test_cli_upscale_format_mrb(capsys, tmp_path: Path, model_card: Path) -> None:
    hr = phantom(5, seed=5, shape=(16, 12, 16), spacing=(1.0, 1.0, 1.0))
    affine, shape = fov_affine(hr.affine, hr.shape, (1.0, 1.0, 4.0))
    lr = Volume(np.round(np.asarray(hr.array).reshape(1, 16, 12, shape[2], 4).mean(-1)), affine,
                {"dtype": "int16"})
    src = mrisr.save(lr, tmp_path / "lr.nii.gz")
    args = ("upscale", src, "--model", model_card, "--spacing", 1.0, "--device", "cpu", "--quiet")
    code, _, err = _run(capsys, *args, "-o", tmp_path / "sr.mrb", "--format", "mrb")
    assert code == 0, err
    scene = tmp_path / "sr.mrb"
    with zipfile.ZipFile(scene) as bundle:
        bundle.extract("sr/Data/lr_sr.nrrd", tmp_path / "sr_only")
    result = mrisr.load(tmp_path / "sr_only" / "sr" / "Data" / "lr_sr.nrrd")
    assert result.shape == hr.shape
    np.testing.assert_allclose(result.affine, hr.affine, atol=ATOL_MM)
    root = check_scene(scene, {"lr": mrisr.load(src), "lr_sr": result}, tmp_path / "x")
    composite = next(root.iter("SliceComposite"))
    assert composite.get("foregroundVolumeID") == _by_name(root, "lr_sr").get("id")
    assert composite.get("backgroundVolumeID") == _by_name(root, "lr").get("id")
    assert len(list(root.iter("Volume"))) == 2  # no difference across grids
    sidecar = json.loads((tmp_path / "sr.json").read_text())
    assert sidecar["output"]["format"] == "mrb" and sidecar["output"]["path"] == str(scene)
    code, _, err = _run(capsys, *args, "-o", scene)  # the .mrb suffix alone chooses the scene
    assert code == 2 and "already exists" in err and err.count("\n") == 1
    code, _, err = _run(capsys, *args, "-o", scene, "--force")
    assert code == 0, err
    code, _, err = _run(capsys, *args, "-o", tmp_path / "sr.nii.gz", "--format", "mrb")
    assert code == 2 and ".mrb" in err and err.count("\n") == 1
