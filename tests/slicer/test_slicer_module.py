"""The 3D Slicer extension (slicer/MRISR): its Python compiles, its Logic builds the right
``mrisr upscale`` command line, parses tqdm progress, runs, fails and installs as it should.

These tests run in plain pytest, NOT inside 3D Slicer (which cannot run here): MRISR.py is imported
against ``fake_slicer``, a small stand-in for the Slicer API (``slicer``, ``slicer.util``,
``slicer.ScriptedLoadableModule``, ``qt``, ``ctk``, ``vtk``) whose ``slicer.util`` functions record
their calls. What only Slicer can check (the real widgets, the real subprocess and IO managers) is
left to ``MRISRTest`` in MRISR.py, which runs inside Slicer ("Reload and Test", or ctest).
"""

from __future__ import annotations

import io
import os
import py_compile
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import fake_slicer
import numpy as np
import pytest
from tqdm import tqdm

from mrisr.cli import build_parser

MODULE_DIR = Path(__file__).resolve().parents[2] / "slicer" / "MRISR"
MODULE_PY = MODULE_DIR / "MRISR.py"
MODULE_UI = MODULE_DIR / "Resources" / "UI" / "MRISR.ui"
PYTHON_SLICER = "/opt/Slicer-5.8.1/bin/PythonSlicer"
ERROR = "mrisr: error: /models/nope.json: no such file or directory. Fix: give a model card, weights or run directory."


@pytest.fixture
def mod(monkeypatch):
    """(the MRISR module imported against the fakes, the fake's recorder)."""
    with fake_slicer.install(MODULE_PY) as (module, fake):
        monkeypatch.setattr(module.shutil, "which", lambda name: PYTHON_SLICER if name == "PythonSlicer" else None)
        yield module, fake


def tqdm_output(total: int, desc: str = "upscale", unit: str = "volume", ascii: bool | None = None) -> str:
    """What a tqdm bar writes to a (non-terminal) stream, carriage returns included, as mrisr's CLI does."""
    stream = io.StringIO()
    with tqdm(total=total, desc=desc, unit=unit, file=stream, mininterval=0, miniters=1, ascii=ascii) as bar:
        for _ in range(total):
            bar.update(1)
    return stream.getvalue()


def command_paths(args: list[str]) -> tuple[str, str]:
    return args[4], args[args.index("-o") + 1]


# -- the module file ---------------------------------------------------------------------


def test_module_compiles(tmp_path: Path) -> None:
    py_compile.compile(str(MODULE_PY), cfile=str(tmp_path / "MRISR.pyc"), doraise=True)


def test_module_layout_is_the_slicer_template() -> None:
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule(" in cmake
    assert re.search(r"MODULE_PYTHON_SCRIPTS\s+\$\{MODULE_NAME\}\.py", cmake)
    assert "Resources/UI/${MODULE_NAME}.ui" in cmake
    top = (MODULE_DIR.parent / "CMakeLists.txt").read_text()
    assert "add_subdirectory(MRISR)" in top and "Slicer_EXTENSION_CPACK" in top


def test_module_imports_against_the_fake_slicer(mod) -> None:
    module, _ = mod
    parent = fake_slicer.Dummy("parent")
    module.MRISR(parent)
    assert parent.title == "MRI Super-Resolution" and parent.categories == ["Filtering"]
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )

    assert issubclass(module.MRISRWidget, ScriptedLoadableModuleWidget)
    assert issubclass(module.MRISRLogic, ScriptedLoadableModuleLogic)
    assert issubclass(module.MRISRTest, ScriptedLoadableModuleTest)


# -- the .ui file ------------------------------------------------------------------------


def test_ui_is_valid_and_names_the_widgets_the_module_uses() -> None:
    root = ET.parse(MODULE_UI).getroot()
    widgets = {w.get("name"): w.get("class") for w in root.iter("widget")}
    assert root.findtext("class") == "MRISR" and widgets["MRISR"] == "qMRMLWidget"
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_PY.read_text()))
    assert used, "the module looks up no widgets?"
    assert used <= set(widgets), f"missing from the .ui: {sorted(used - set(widgets))}"
    assert widgets["inputSelector"] == "qMRMLNodeComboBox"
    assert widgets["modelPathLineEdit"] == "ctkPathLineEdit"
    assert widgets["spacingSpinBox"] == "QDoubleSpinBox"
    assert widgets["deviceComboBox"] == "QComboBox"
    assert widgets["applyButton"] == "QPushButton"
    node_types = root.find(".//widget[@name='inputSelector']/property[@name='nodeTypes']/stringlist")
    assert [s.text for s in node_types] == ["vtkMRMLScalarVolumeNode"]
    # The node selector gets the scene from the module widget (Slicer template's connection).
    connection = root.find("connections/connection")
    assert connection.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
    assert connection.findtext("receiver") == "inputSelector"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    assert {c for c in widgets.values() if not c.startswith("Q")} <= declared


def test_widget_setup_with_the_fake_ui(mod) -> None:
    module, fake = mod
    widget = module.MRISRWidget()
    widget.setup()
    assert fake.called("loadUI")[0][0][0] == str(MODULE_UI)
    assert ("clicked(bool)", widget.onApplyButton) in widget.ui.applyButton.connections
    assert isinstance(widget.logic, module.MRISRLogic)
    assert widget.ui.spacingSpinBox.value == 0.0 and widget.ui.deviceComboBox.currentText == "auto"


def test_widget_apply_runs_the_logic_and_remembers_the_choices(mod, monkeypatch) -> None:
    module, fake = mod
    widget = module.MRISRWidget()
    widget.setup()
    node = fake_slicer.FakeVolumeNode("MRHead")
    widget.ui.inputSelector.currentNode = lambda: node
    widget.ui.modelPathLineEdit.currentPath = "/models/t2/model.json"
    widget.ui.spacingSpinBox.value = 0.7
    widget.ui.deviceComboBox.currentText = "cpu"
    seen = []

    def process(input_node, model, spacing, device, progress_callback=None, log_callback=None):
        seen.append((input_node, model, spacing, device))
        progress_callback(0.5)
        return fake_slicer.FakeVolumeNode("MRHead SR")

    monkeypatch.setattr(widget.logic, "process", process)
    widget.onApplyButton()

    assert fake.called("errorDisplay") == []
    assert seen == [(node, "/models/t2/model.json", 0.7, "cpu")]
    assert fake.settings == {"MRISR/model": "/models/t2/model.json", "MRISR/device": "cpu", "MRISR/spacing": 0.7}
    [(_, layers)] = fake.called("setSliceViewerLayers")
    assert layers["background"] is node and layers["foreground"].GetName() == "MRHead SR"
    widget2 = module.MRISRWidget()
    widget2.setup()  # the next session starts from the remembered choices
    assert widget2.ui.spacingSpinBox.value == 0.7 and widget2.ui.deviceComboBox.currentText == "cpu"


# -- the command line --------------------------------------------------------------------


def test_build_command_with_spacing(mod) -> None:
    module, _ = mod
    command = module.MRISRLogic().build_command("/tmp/in.nii.gz", "/tmp/out.nii.gz", "/models/t2/model.json",
                                                0.5, "cuda")
    assert command == [PYTHON_SLICER, "-m", "mrisr.cli", "upscale", "/tmp/in.nii.gz", "-o", "/tmp/out.nii.gz",
                       "--model", "/models/t2/model.json", "--spacing", "0.5", "--device", "cuda", "--force"]


def test_build_command_without_spacing(mod) -> None:
    module, _ = mod
    command = module.MRISRLogic().build_command("/tmp/in.nii.gz", "/tmp/out.nii.gz", "/runs/t2-x3", 0, "auto")
    assert command == [PYTHON_SLICER, "-m", "mrisr.cli", "upscale", "/tmp/in.nii.gz", "-o", "/tmp/out.nii.gz",
                       "--model", "/runs/t2-x3", "--device", "auto", "--force"]


def test_build_command_falls_back_to_this_python(mod, monkeypatch) -> None:
    module, _ = mod
    monkeypatch.setattr(module.shutil, "which", lambda name: None)
    assert module.MRISRLogic().build_command("a", "b", "m")[0] == sys.executable


@pytest.mark.parametrize("spacing", [0.0, 0.5])
def test_the_command_is_what_mrisr_upscale_accepts(mod, spacing: float) -> None:
    """The arguments after ``-m mrisr.cli`` parse with mrisr's own parser, to the values meant."""
    module, _ = mod
    command = module.MRISRLogic().build_command("/tmp/in.nii.gz", "/tmp/out.nii.gz", "/m/model.json", spacing, "cpu")
    assert command[1:3] == ["-m", "mrisr.cli"]
    args = build_parser().parse_args(command[3:])
    assert args.command == "upscale" and args.func.__name__ == "_cmd_upscale"
    assert (str(args.input), str(args.output), args.model) == ("/tmp/in.nii.gz", "/tmp/out.nii.gz", "/m/model.json")
    assert args.spacing == ([spacing] if spacing else None)
    assert args.device == "cpu" and args.force and not args.quiet and not args.json  # quiet would hide the bar


# -- progress ----------------------------------------------------------------------------


@pytest.mark.parametrize("ascii", [True, False])
@pytest.mark.parametrize("total", [1, 3, 20])
def test_parse_progress_on_real_tqdm_lines(mod, total: int, ascii: bool) -> None:
    module, _ = mod
    lines = [line for line in re.split(r"[\r\n]+", tqdm_output(total, ascii=ascii)) if line.strip()]
    assert len(lines) >= total + 1
    for line in lines:
        done, of = map(int, re.search(r"\| *(\d+)/(\d+)", line).groups())
        assert module.parse_progress(line) == pytest.approx(done / of, abs=0.005), line  # tqdm shows whole %
    assert module.parse_progress(lines[0]) == 0.0 and module.parse_progress(lines[-1]) == 1.0


def test_parse_progress_examples(mod) -> None:
    parse = mod[0].parse_progress
    assert parse("  45%|####      | 9/20 [00:01<00:02,  5.00it/s]") == pytest.approx(0.45)
    assert parse("upscale: 100%|██████████| 1/1 [00:04<00:00,  4.2s/volume]") == 1.0
    assert parse("  7%|▋         | 7/100") == pytest.approx(0.07)


@pytest.mark.parametrize("line", [
    "",
    "wrote /tmp/MRISR-x/output.nii.gz (256 x 256 x 180 at 1 x 1 x 1 mm) and /tmp/MRISR-x/output.json",
    ERROR,
    "mrisr: warning: the input has 2 volumes; each is upscaled",
    "mrisr: internal error: ValueError: 45% (please report it)",
    "upscaled 45% of the slices",
    "{\"seconds\": {\"load\": 0.1}}",
])
def test_parse_progress_ignores_other_lines(mod, line: str) -> None:
    assert mod[0].parse_progress(line) is None


# -- process ---------------------------------------------------------------------------------


def fake_run(output: str, returncode: int, write_output: bool = True):
    """A ``process_factory``: the process 'writes' the output file (as mrisr would), then prints."""

    def factory(args: list[str]) -> fake_slicer.FakeProcess:
        if write_output and returncode == 0:
            Path(command_paths(args)[1]).write_bytes(b"fake result")
        return fake_slicer.FakeProcess(args, output, returncode)

    return factory


def test_process_streams_progress_and_loads_the_result(mod, tmp_path: Path) -> None:
    module, fake = mod
    fake.temporary_path = str(tmp_path)
    bar = tqdm_output(4)
    assert "\r" in bar  # the carriage returns the process' universal newlines turn into lines
    fake.process_factory = fake_run(bar + "wrote /x/output.nii.gz (64 x 64 x 60 at 1 x 1 x 1 mm) and x.json\n", 0)
    node = fake_slicer.FakeVolumeNode("MRHead", "/data/MRHead.nrrd")
    progress: list[float] = []
    log: list[str] = []

    result = module.MRISRLogic().process(node, "/models/t2/model.json", 0.0, "cpu",
                                         progress_callback=progress.append, log_callback=log.append)

    (args,), kwargs = fake.called("launchConsoleProcess")[0]
    input_path, output_path = command_paths(args)
    assert args == module.MRISRLogic().build_command(input_path, output_path, "/models/t2/model.json", 0.0, "cpu")
    assert kwargs["useStartupEnvironment"] is False
    (saved_node, saved_path, _), _ = fake.called("saveNode")[0]
    assert saved_node is node and saved_path == input_path and input_path.endswith(".nii.gz")
    assert [a[0] for a, _ in fake.called("loadVolume")] == [output_path]
    assert output_path.endswith(".nii.gz") and Path(output_path).parent == Path(input_path).parent
    assert result.GetName() == "MRHead SR"
    assert progress == sorted(progress) and progress[0] == 0.0 and progress[-1] == 1.0
    assert progress[:-1] == [0.0, 0.25, 0.5, 0.75, 1.0][: len(progress) - 1]
    assert log == ["wrote /x/output.nii.gz (64 x 64 x 60 at 1 x 1 x 1 mm) and x.json"]
    assert not Path(input_path).parent.exists(), "the temporary folder stays"
    assert Path(input_path).parent.parent == tmp_path  # under Slicer's temporary path
    assert node.GetStorageNode().GetFileName() == "/data/MRHead.nrrd"  # not the deleted temporary file


def test_process_failure_raises_mrisr_error_line(mod) -> None:
    module, fake = mod
    fake.process_factory = fake_run(tqdm_output(2).split("\r")[1] + "\n" + ERROR + "\n", 2)
    node = fake_slicer.FakeVolumeNode("MRHead")
    progress: list[float] = []

    with pytest.raises(RuntimeError) as err:
        module.MRISRLogic().process(node, "/models/nope.json", 0.5, "auto", progress_callback=progress.append)

    assert ERROR in str(err.value) and "exit status 2" in str(err.value)
    assert fake.called("loadVolume") == []
    assert 1.0 not in progress
    input_path = command_paths(fake.called("launchConsoleProcess")[0][0][0])[0]
    assert not Path(input_path).parent.exists()


def test_process_failure_without_mrisr_line_reports_the_last_line(mod) -> None:
    module, fake = mod
    output = "Traceback (most recent call last):\nModuleNotFoundError: No module named 'mrisr'\n"
    fake.process_factory = fake_run(output, 1)
    with pytest.raises(RuntimeError, match="No module named 'mrisr'"):
        module.MRISRLogic().process(fake_slicer.FakeVolumeNode("MRHead"), "m.json", 0, "auto")


@pytest.mark.slow
def test_process_runs_the_real_cli(mod, monkeypatch, tmp_path: Path) -> None:
    """End to end but for Slicer: the real ``python -m mrisr.cli upscale`` in a process started as
    launchConsoleProcess starts it, with a tiny untrained model; then the same with a bad model."""
    import torch

    import mrisr
    from mrisr.models.card import save_checkpoint
    from mrisr.nets import VDSR
    from mrisr.volume import Volume

    module, fake = mod
    monkeypatch.setattr(module.shutil, "which", lambda name: None)  # sys.executable: this venv's Python
    torch.manual_seed(0)
    card = save_checkpoint(VDSR(2, features=4, depth=3), tmp_path / "model", {"note": "untrained, for tests"})
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    volume = Volume(np.random.default_rng(0).uniform(0, 100, (1, 16, 12, 6)).astype(np.float32), affine, {})

    def save_node(node, filename, properties=None):
        fake.calls.append(("saveNode", (node, filename, properties), {}))
        mrisr.save(volume, filename)
        return True

    monkeypatch.setattr(fake.modules["slicer.util"], "saveNode", save_node)
    fake.process_factory = fake_slicer.slicer_popen
    progress: list[float] = []
    log: list[str] = []

    result = module.MRISRLogic().process(fake_slicer.FakeVolumeNode("T2"), str(card), 1.0, "cpu",
                                         progress_callback=progress.append, log_callback=log.append)

    assert result.GetName() == "T2 SR"
    assert progress[0] == 0.0 and progress[-1] == 1.0 and progress == sorted(progress), progress
    assert any(line.startswith("wrote ") for line in log), log
    with pytest.raises(RuntimeError, match=r"exit status 2\): mrisr: error: .*missing\.json"):
        module.MRISRLogic().process(fake_slicer.FakeVolumeNode("T2"), str(tmp_path / "missing.json"), 0, "cpu")


def test_process_refuses_missing_inputs(mod) -> None:
    module, fake = mod
    with pytest.raises(ValueError, match="No input volume"):
        module.MRISRLogic().process(None, "m.json")
    with pytest.raises(ValueError, match="No model"):
        module.MRISRLogic().process(fake_slicer.FakeVolumeNode("MRHead"), "  ")
    assert fake.calls == []


# -- first-use installation --------------------------------------------------------------


def test_ensure_mrisr_does_nothing_when_installed(mod) -> None:
    module, fake = mod
    assert module.mrisr_available()  # this test environment has mrisr
    module.MRISRLogic().ensure_mrisr()
    assert fake.called("pip_install") == []


@pytest.mark.parametrize("source", [None, "/src/mrisr checkout"])
def test_ensure_mrisr_installs_keeping_slicers_simpleitk(mod, monkeypatch, source: str | None) -> None:
    module, fake = mod
    import importlib.metadata

    installed = {"ok": False}
    monkeypatch.setattr(module, "mrisr_available", lambda: installed["ok"])
    fake.on_pip_install = lambda requirements: installed.update(ok=True)
    if source is None:
        monkeypatch.delenv("MRISR_SOURCE", raising=False)
    else:
        monkeypatch.setenv("MRISR_SOURCE", source)

    module.MRISRLogic().ensure_mrisr()

    [((requirements,), _)] = fake.called("pip_install")
    assert isinstance(requirements, list)  # one argument per item: paths with spaces survive
    assert requirements[:2] == [source or "mrisr", "-c"]
    constraints_file = requirements[2]
    constraints = fake.pip_files[constraints_file].splitlines()
    assert f"SimpleITK=={importlib.metadata.version('SimpleITK')}" in constraints
    assert f"numpy=={importlib.metadata.version('numpy')}" in constraints
    assert not os.path.exists(constraints_file)  # cleaned up after pip


def test_ensure_mrisr_pins_simpleitk_without_pip_metadata(mod, monkeypatch) -> None:
    """Slicer's own SimpleITK build: the version comes from the module when metadata is absent."""
    module, _ = mod
    import importlib.metadata

    def no_metadata(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(module.importlib.metadata, "version", no_metadata)
    import SimpleITK

    assert module.MRISRLogic().constraints() == [f"SimpleITK=={SimpleITK.Version_VersionString()}"]


def test_ensure_mrisr_reports_an_install_that_does_not_import(mod, monkeypatch) -> None:
    module, fake = mod
    monkeypatch.setattr(module, "mrisr_available", lambda: False)
    with pytest.raises(RuntimeError, match="restart Slicer"):
        module.MRISRLogic().ensure_mrisr()
    assert len(fake.called("pip_install")) == 1
