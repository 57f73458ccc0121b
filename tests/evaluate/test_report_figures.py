"""mrisr.evaluate.report's figure layout: plane names and directions from the RAS affine, edge letters
(radiological convention) for any voxel order, the error colour bar and the PSNR curve's axis titles."""

from __future__ import annotations

import numpy as np
import pytest

from mrisr.evaluate import report
from mrisr.evaluate.report import (
    colour_bar_ticks,
    curve_labels,
    edge_labels,
    oriented_plane,
    plane_layout,
    slice_axis_title,
)
from tests.conftest import AXIS_ORDERS, phantom_affine

#: The radiological display: plane -> the patient direction at the image's left, right, top, bottom.
RADIOLOGICAL = {"axial": ("R", "L", "A", "P"), "coronal": ("R", "L", "S", "I"), "sagittal": ("A", "P", "S", "I")}
#: The RAS world axis (0: x, 1: y, 2: z) whose normal names each plane.
NORMAL = {"sagittal": 0, "coronal": 1, "axial": 2}
SHAPE = (24, 20, 12)
SPACING = (0.9, 1.2, 3.0)


def _rotation_x(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _world(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """RAS coordinates (mm) of every voxel centre: ``(3, X, Y, Z)``."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).reshape(3, -1)
    return (affine[:3, :3] @ index + affine[:3, 3:]).reshape(3, *shape)


@pytest.mark.parametrize("order", range(len(AXIS_ORDERS)))
def test_every_axis_order_is_named_and_drawn_radiologically(order: int) -> None:
    affine = phantom_affine(order, spacing=SPACING, oblique_deg=0.0)
    perm, _ = AXIS_ORDERS[order]
    names = set()
    for axis in range(3):
        layout = plane_layout(affine, axis)
        assert NORMAL[layout.name] == perm[axis]  # the plane perpendicular to the voxel axis's world axis
        assert layout.tilt_deg == pytest.approx(0.0, abs=1e-6)
        sides = layout.sides
        assert (sides["left"], sides["right"], sides["top"], sides["bottom"]) == RADIOLOGICAL[layout.name]
        assert {layout.axis, layout.across, layout.down} == {0, 1, 2}
        names.add(layout.name)
    assert names == {"axial", "coronal", "sagittal"}


@pytest.mark.parametrize("order", range(len(AXIS_ORDERS)))
def test_the_letters_sit_on_the_patients_side_of_the_drawn_plane(order: int) -> None:
    """A marker filling the patient's left-anterior-superior octant lands next to the L, A and S letters
    of every plane, and radiologically: L on the image's right, A and S at the top (A left in sagittal)."""
    affine = phantom_affine(order, spacing=SPACING, oblique_deg=0.0)
    world = _world(affine, SHAPE)
    centre = world.reshape(3, -1).mean(1)
    x, y, z = (world[k] - centre[k] for k in range(3))
    volume = ((x < 0) & (y > 0) & (z > 0)).astype(np.float32)  # RAS: left is -x, anterior +y, superior +z
    point = centre + np.array([-3.0, 3.0, 6.0])  # inside the octant
    voxel = np.linalg.solve(affine[:3, :3], point - affine[:3, 3])
    voxel_mm = np.asarray(SPACING)
    for axis in range(3):
        layout = plane_layout(affine, axis)
        plane = oriented_plane(volume, layout, int(round(voxel[axis])), voxel_mm)
        rows, cols = np.nonzero(plane)
        assert rows.size, "the marker is in the plane"
        marker = np.array([rows.mean(), cols.mean()])
        height, width = plane.shape
        at = {letter: np.array([row + 5, col + 3]) for letter, row, col in edge_labels(layout, height, width)}
        for letter in "LAS":
            if letter in at:
                opposite = {"L": "R", "A": "P", "S": "I"}[letter]
                assert np.linalg.norm(marker - at[letter]) < np.linalg.norm(marker - at[opposite]), (layout, letter)
        if layout.name in ("axial", "coronal"):
            assert marker[1] > width / 2  # the patient's left on the image's right
        if layout.name == "sagittal":
            assert marker[1] < width / 2  # anterior on the image's left
        assert marker[0] < height / 2  # anterior (axial) or superior (coronal, sagittal) at the top


def test_square_millimetre_pixels() -> None:
    affine = phantom_affine(0, spacing=SPACING, oblique_deg=0.0)
    layout = plane_layout(affine, 0)  # sagittal: y (1.2 mm) across, z (3 mm) down
    plane = oriented_plane(np.zeros(SHAPE, np.float32), layout, 0, np.asarray(SPACING))
    assert plane.shape == (round(12 * 3.0 / 1.2), 20)


def test_an_oblique_volume_names_its_closest_plane() -> None:
    affine = np.eye(4)
    affine[:3, :3] = _rotation_x(25.0)
    assert [plane_layout(affine, a).name for a in range(3)] == ["sagittal", "coronal", "axial"]
    assert [plane_layout(affine, a).tilt_deg for a in range(3)] == pytest.approx([0.0, 25.0, 25.0])
    affine[:3, :3] = _rotation_x(60.0)  # voxel axis 2 now points closer to posterior than to superior
    assert [plane_layout(affine, a).name for a in range(3)] == ["sagittal", "axial", "coronal"]
    assert [plane_layout(affine, a).tilt_deg for a in range(3)] == pytest.approx([0.0, 30.0, 30.0])
    for axis in range(3):
        layout = plane_layout(affine, axis)
        assert tuple(layout.sides.values()) == RADIOLOGICAL[layout.name]


def test_edge_letters_sit_inside_their_edges() -> None:
    layout = plane_layout(np.eye(4), 2)
    height, width = 100, 80
    labels = {letter: (row, col) for letter, row, col in edge_labels(layout, height, width)}
    assert set(labels) == {"R", "L", "A", "P"}
    assert labels["R"][1] < width / 4 < 3 * width / 4 < labels["L"][1]
    assert labels["A"][0] < height / 4 < 3 * height / 4 < labels["P"][0]
    for row, col in labels.values():
        assert 0 <= row <= height - 10 and 0 <= col <= width - 6  # a 3x5 glyph at scale 2 fits


def test_the_error_colour_bar_shows_its_scale() -> None:
    assert colour_bar_ticks(40.0) == [(0.0, "0"), (20.0, "20"), (40.0, "40")]
    bar = report._colour_bar(100, 40.0)
    column = bar[1:-1, 5].astype(int).sum(1)  # inside the border: brightness from the top down
    assert np.all(np.diff(column) <= 0) and column[0] > 700 and column[-1] < 20  # white (40) to black (0)
    assert (bar[:, 14:] == 0).any()  # the tick values are written beside it

    panels = [("SR", np.ones((16, 16)), "image"), ("|SR-HR|", np.zeros((16, 16)), "error")]
    layout = plane_layout(np.eye(4), 2)
    figure = report._view_figure(panels, (0.0, 1.0), 40.0, ["axial plane"], layout)
    height = 16 * (128 // 16)
    bar = report._colour_bar(height, 40.0)
    found = [(r, c) for r, c in zip(*np.nonzero((figure == bar[1, 1]).all(-1)), strict=True)
             if r >= 1 and c >= 1 and r - 1 + height <= figure.shape[0] and c - 1 + bar.shape[1] <= figure.shape[1]
             and (figure[r - 1:r - 1 + height, c - 1:c - 1 + bar.shape[1]] == bar).all()]
    assert found, "the view figure holds the colour bar"
    assert found[0][1] > 2 * (128 + 6)  # to the right of the two panels


def test_the_psnr_curve_names_its_axes() -> None:
    affine = np.diag([1.0, 1.0, 4.0, 1.0])
    title = slice_axis_title(affine, 2)
    assert "voxel axis 2" in title and "axial" in title and "I to S" in title and "4 mm" in title
    flipped = np.array([[0, 0, 0.9, 0], [0, -1.2, 0, 0], [-3.0, 0, 0, 0], [0, 0, 0, 1]])  # voxel axis 0 runs to I
    assert "axial slices, S to I, 3 mm" in slice_axis_title(flipped, 0)
    assert "coronal slices, A to P, 1.2 mm" in slice_axis_title(flipped, 1)

    width, height = 640, 340
    labels = curve_labels(["SR", "CUBIC"], 32, 20.0, 40.0, title, width=width, height=height)
    where = {text: (row, col) for text, row, col in labels}
    left, _, top, bottom = report._CURVE_MARGINS
    assert where["PSNR (dB)"][0] < top and where["PSNR (dB)"][1] < left  # y title above the y axis
    row, col = where[title]
    assert row > height - bottom and abs(col + report._text_width(title) / 2 - width / 2) <= 1  # centred below
    assert {"20.0", "30.0", "40.0", "0", "15", "31", "SR", "CUBIC"} <= set(where)
    assert where["40.0"][0] < where["30.0"][0] < where["20.0"][0]  # the y ticks rise with PSNR
    assert where["0"][1] < where["15"][1] < where["31"][1] and where["0"][0] > height - bottom
    figure = report._curve_figure([("SR", [30.0] * 32, (31, 119, 180))], title)
    assert figure.shape[0] == height and figure.shape[1] >= report._text_width(title)
