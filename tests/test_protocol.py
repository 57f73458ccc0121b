"""Protocol loading and validation: shipped cards load; bad ones name the key."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from mrisr.errors import ProtocolError
from mrisr.protocol import Acquisition, AcquisitionParams, list_protocols, load_protocol

SHIPPED = {
    "brain-t1-axial-5mm",
    "brain-t2-fse-axial-5mm",
    "knee-pd-sagittal-3mm",
    "lowfield-fast-6mm",
    "thick-slice-x4",
}


def _card(**acquisition) -> dict:
    base = {
        "orientation": "axial",
        "phase_encode": "AP",
        "slice": {"profile": "gaussian", "thickness_mm": {"nominal": 5.0, "range": [4.0, 6.0]}},
    }
    base.update(acquisition)
    return {"schema_version": 1, "name": "t", "description": "test", "acquisition": base}


def _write(tmp_path: Path, card: dict) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


def test_shipped_protocols_load_with_ranges_and_a_nominal_setting() -> None:
    protocols = {p.name: p for p in list_protocols()}
    assert SHIPPED <= set(protocols)
    for name in SHIPPED:
        p = load_protocol(name)
        assert p.name == name == Path(p.source).stem and p.description
        nominal = p.acquisition.nominal()
        assert isinstance(nominal, AcquisitionParams)
        assert p.acquisition.sample(torch.Generator().manual_seed(1)) is not None


def test_clinical_cards_say_what_the_issue_asks() -> None:
    t1 = load_protocol("brain-t1-axial-5mm").acquisition.nominal()
    assert (t1.orientation, t1.profile, t1.thickness_mm, t1.slice_spacing_mm, t1.in_plane_spacing_mm) == (
        "axial", "gaussian", 5.0, 6.0, 1.0)
    t2 = load_protocol("brain-t2-fse-axial-5mm").acquisition.nominal()
    assert (t2.thickness_mm, t2.in_plane_spacing_mm) == (5.0, 0.9)
    knee = load_protocol("knee-pd-sagittal-3mm").acquisition.nominal()
    assert (knee.orientation, knee.in_plane_spacing_mm, knee.thickness_mm) == ("sagittal", 0.4, 3.0)
    low = load_protocol("lowfield-fast-6mm").acquisition.nominal()
    assert (low.in_plane_spacing_mm, low.thickness_mm, low.snr) == (2.0, 6.0, 15.0)
    x4 = load_protocol("thick-slice-x4").acquisition.nominal()
    assert (x4.profile, x4.slice_scale, x4.snr, x4.in_plane_spacing_mm) == ("rect", 4.0, math.inf, None)


def test_sampling_is_seeded_and_inside_the_ranges() -> None:
    acq = load_protocol("brain-t1-axial-5mm").acquisition
    a = acq.sample(torch.Generator().manual_seed(7))
    b = acq.sample(torch.Generator().manual_seed(7))
    c = acq.sample(torch.Generator().manual_seed(8))
    assert a == b and a != c
    draws = [acq.sample(torch.Generator().manual_seed(s)) for s in range(200)]
    assert all(4.0 <= d.thickness_mm <= 6.0 and 1.0 * 0.9 <= d.in_plane_spacing_mm <= 1.2 for d in draws)
    assert {d.profile for d in draws} == {"gaussian", "rect"}
    assert any(math.isinf(d.snr) for d in draws) or max(d.snr for d in draws) > 100
    assert all(d.snr >= 20.0 for d in draws)
    moving = sum(d.motion_translation_mm > 0 for d in draws)
    assert 10 < moving < 80  # probability 0.2 of 200


@pytest.mark.parametrize(
    ("card", "key"),
    [
        (_card(slice={"profile": "gaussian", "thikness_mm": 5.0}), "acquisition.slice.thikness_mm"),
        (_card(slice={"profile": "gaussian", "thickness_mm": 0.0}), "acquisition.slice.thickness_mm"),
        (_card(slice={"profile": "gaussian", "thickness_mm": -2.0}), "acquisition.slice.thickness_mm"),
        (_card(partial_fourier=1.2), "acquisition.partial_fourier"),
        (_card(partial_fourier={"nominal": 0.7, "range": [0.4, 1.0]}), "acquisition.partial_fourier"),
        (_card(slice={"profile": "trapezoid", "thickness_mm": 5.0}), "acquisition.slice.profile"),
        (_card(slice={"profile": "gaussian", "thickness_mm": "five"}), "acquisition.slice.thickness_mm"),
        (_card(slice={"profile": "gaussian", "thickness_mm": {"nominal": 7.0, "range": [4.0, 6.0]}}),
         "acquisition.slice.thickness_mm"),
        (_card(slice={"profile": "gaussian", "thickness_mm": 5.0, "scale": 4.0}), "acquisition.slice"),
        (_card(noise={"snr": 0.0}), "acquisition.noise.snr"),
        (_card(phase_encode="SI"), "acquisition.phase_encode"),
        (_card(motion={"segments": 0}), "acquisition.motion.segments"),
        ({"schema_version": 1, "name": "t", "description": "x"}, "acquisition"),
        ({**_card(), "schema_version": 2}, "schema_version"),
        ({**_card(), "extra_block": {}}, "extra_block"),
        ({**_card(), "network": {"depth": "deep"}}, "network.depth"),
        ({**_card(), "network": {"depth": -3}}, "network.depth"),
        ({**_card(), "train": {"learning_rate": float("nan")}}, "train.learning_rate"),
        ({**_card(), "train": {"patch_size": []}}, "train.patch_size"),
        ({**_card(), "inference": {"overlap": 7.0}}, "inference.overlap"),
        ({**_card(), "export": {"formats": []}}, "export.formats"),
        (_card(slice={"profile": [], "thickness_mm": 5.0}), "acquisition.slice.profile"),
        (_card(undersampling={"acceleration": 16.0}), "acquisition.undersampling.center_fraction"),
    ],
    ids=[
        "unknown-key", "zero-thickness", "negative-thickness", "fraction-above-1", "fraction-range-below-half",
        "unknown-profile", "thickness-not-a-number", "nominal-outside-range", "thickness-and-scale",
        "zero-snr", "phase-encode-along-slice", "no-motion-segments", "missing-block", "schema-version",
        "unknown-block", "wrong-type-in-network", "negative-depth", "nan-learning-rate", "empty-patch",
        "overlap-above-1", "no-export-format", "empty-profile-list", "centre-larger-than-acquired",
    ],
)
def test_bad_protocols_name_the_key(tmp_path: Path, card: dict, key: str) -> None:
    path = _write(tmp_path, card)
    with pytest.raises(ProtocolError) as err:
        load_protocol(path)
    line = str(err.value)
    assert "\n" not in line and str(path) in line
    assert err.value.problem.startswith(f"{key}:") or f"{key}." in err.value.problem, line


def test_bad_yaml_and_unknown_names(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("acquisition: [unclosed\n")
    with pytest.raises(ProtocolError, match="not valid YAML"):
        load_protocol(bad)
    with pytest.raises(ProtocolError, match="no protocol named 'nope'.*thick-slice-x4"):
        load_protocol("nope")
    code = tmp_path / "code.yaml"
    code.write_text("!!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ProtocolError, match="not valid YAML"):  # safe_load: never executes
        load_protocol(code)


def test_acquisition_is_frozen_data() -> None:
    acq = load_protocol("thick-slice-x4").acquisition
    assert isinstance(acq, Acquisition)
    with pytest.raises(AttributeError):
        acq.orientation = "coronal"  # type: ignore[misc]


def test_the_format_example_in_protocols_readme_is_valid(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[1] / "protocols" / "README.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.yaml"
    path.write_text(example)
    protocol = load_protocol(path)
    assert protocol.acquisition.undersampling is not None and protocol.train.patch_size == (64, 64)
    assert protocol.acquisition.nominal().acceleration == 2.0
