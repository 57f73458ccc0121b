"""Every notebook's code cells run top to bottom (no Jupyter needed: cells are exec'd in order),
and the committed notebooks carry no outputs."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from mrisr.models import registry

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
#: Notebooks that upscale with the shipped default model: notebook -> the model it needs.
NEEDS_SHIPPED_MODEL = {"01_quickstart.ipynb": "vdsr2d-thick"}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(notebook: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = NEEDS_SHIPPED_MODEL.get(notebook.name)
    if model is not None and model not in registry.shipped_models():
        pytest.skip(f"needs the shipped model {model!r} (mrisr/models/{model}.json), not shipped yet")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # notebooks write only into temp folders
    monkeypatch.setenv("MPLBACKEND", "Agg")  # plots render off-screen; plt.show() draws nothing
    cells = json.loads(notebook.read_text())["cells"]
    namespace: dict = {"__name__": "__notebook__"}
    try:
        for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
            exec(compile("".join(cell["source"]), f"{notebook.name}[{i}]", "exec"), namespace)
    finally:
        if "plt" in namespace:
            namespace["plt"].close("all")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_outputs_are_stripped(notebook: Path) -> None:
    cells = json.loads(notebook.read_text())["cells"]
    for cell in (c for c in cells if c["cell_type"] == "code"):
        assert cell.get("outputs") == [] and cell.get("execution_count") is None, \
            f"{notebook.name}: clear the outputs before committing (Jupyter: Edit > Clear All Outputs)"


def test_notebooks_are_numbered_and_there_is_a_quickstart() -> None:
    names = [p.name for p in NOTEBOOKS]
    assert names and names[0] == "01_quickstart.ipynb", names
    assert [n[:2] for n in names] == [f"{i:02d}" for i in range(1, len(names) + 1)], names
