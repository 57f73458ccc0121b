"""MRISR: super-resolve a volume with ``mrisr upscale`` from inside 3D Slicer.

The module saves the selected volume to a temporary NIfTI file, runs the ``mrisr upscale``
command in Slicer's own Python (``PythonSlicer -m mrisr.cli upscale ...``) through
``slicer.util.launchConsoleProcess``, streams its tqdm progress into the module panel, and
loads the result back as a new volume named ``"<input> SR"``. mrisr is pip-installed into
Slicer's Python on first use, without replacing the SimpleITK (and numpy, torch) Slicer
already has: see :meth:`MRISRLogic.ensure_mrisr`.

Layout follows Slicer's ScriptedLoadableModule template: module, widget, logic and test classes.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable

import qt
import slicer
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

#: Environment variable naming a local mrisr source tree or wheel to install instead of PyPI's ``mrisr``.
SOURCE_ENV = "MRISR_SOURCE"
#: Packages Slicer's Python already has that installing mrisr must not replace: pinned to the
#: installed version in a pip constraints file. SimpleITK is Slicer's own build (its IO and
#: SimpleFilters module use it); numpy is what VTK and slicer.util.arrayFromVolume are built
#: against; torch may be the CUDA build the PyTorch extension chose for this machine.
PROTECTED_PACKAGES = ("SimpleITK", "numpy", "torch")
#: Devices offered in the panel (``mrisr upscale --device``).
DEVICES = ("auto", "cpu", "cuda")

_SETTINGS_MODEL = "MRISR/model"
_SETTINGS_DEVICE = "MRISR/device"
_SETTINGS_SPACING = "MRISR/spacing"
# tqdm's bar: "upscale:  45%|####      | 9/20 [00:01<00:02, ...]" (the percentage right before "|").
_PROGRESS = re.compile(r"(?:^|[\s:])(\d{1,3}(?:\.\d+)?)%\|")
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+!_-]*$")


#
# MRISR
#


class MRISR(ScriptedLoadableModule):
    """The module's metadata (title, category, help) for Slicer's module list."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MRI Super-Resolution"
        self.parent.categories = ["Filtering"]
        self.parent.dependencies = []
        self.parent.contributors = ["mrisr developers"]
        self.parent.helpText = (
            "Super-resolves an MRI volume with a trained mrisr model (<code>mrisr upscale</code>) and loads "
            "the result as a new volume, aligned with its input. Pick the volume, the model (a model card "
            "<code>.json</code>, weights <code>.safetensors</code> or a training run directory) and the target "
            "spacing (0: isotropic at the finest input spacing). mrisr is installed into Slicer's Python on "
            "first use."
        )
        self.parent.acknowledgementText = "mrisr: MRI super-resolution toolkit with exact geometry (Apache-2.0)."


#
# MRISRWidget
#


class MRISRWidget(ScriptedLoadableModuleWidget):
    """The panel: input volume, model, target spacing, device, Apply, progress."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.logic = None
        self.ui = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRISR.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        # The node selectors get the scene through the mrmlSceneChanged connection in the .ui file.
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MRISRLogic()

        settings = qt.QSettings()
        self.ui.modelPathLineEdit.nameFilters = ["Model card (*.json)", "Weights (*.safetensors)", "All files (*)"]
        self.ui.modelPathLineEdit.currentPath = str(settings.value(_SETTINGS_MODEL, ""))
        for device in DEVICES:
            self.ui.deviceComboBox.addItem(device)
        self.ui.deviceComboBox.currentText = str(settings.value(_SETTINGS_DEVICE, "auto"))
        try:
            self.ui.spacingSpinBox.value = float(settings.value(_SETTINGS_SPACING, 0.0) or 0.0)
        except (TypeError, ValueError):  # an unreadable setting: the default
            self.ui.spacingSpinBox.value = 0.0
        self.ui.progressBar.setVisible(False)
        self.ui.statusLabel.text = ""

        self.ui.inputSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateApplyButtonState)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.updateApplyButtonState)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.updateApplyButtonState()

    def cleanup(self):
        pass

    def updateApplyButtonState(self, *_args):
        ready = bool(self.ui.inputSelector.currentNode()) and bool(str(self.ui.modelPathLineEdit.currentPath).strip())
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = "Super-resolve the input volume" if ready else "Select a volume and a model"

    def onProgress(self, fraction):
        if fraction <= 0:
            self.ui.progressBar.setRange(0, 0)  # busy until the first step is done
        else:
            self.ui.progressBar.setRange(0, 100)
            self.ui.progressBar.setValue(int(round(100 * fraction)))
        slicer.app.processEvents()

    def onLog(self, line):
        self.ui.statusLabel.text = line[:200]
        slicer.app.processEvents()

    def onApplyButton(self):
        inputNode = self.ui.inputSelector.currentNode()
        model = str(self.ui.modelPathLineEdit.currentPath).strip()
        spacing = float(self.ui.spacingSpinBox.value)
        device = str(self.ui.deviceComboBox.currentText)
        settings = qt.QSettings()
        settings.setValue(_SETTINGS_MODEL, model)
        settings.setValue(_SETTINGS_DEVICE, device)
        settings.setValue(_SETTINGS_SPACING, spacing)
        self.ui.modelPathLineEdit.addCurrentPathToHistory()

        with slicer.util.tryWithErrorDisplay("MRISR: super-resolution failed.", waitCursor=True):
            if not mrisr_available():
                if not slicer.util.confirmOkCancelDisplay(
                    "The mrisr Python package is needed and will be installed into Slicer's Python now "
                    "(with PyTorch, this can take several minutes). Slicer's own SimpleITK is kept."
                ):
                    return
                self.onLog("Installing mrisr ...")
                self.logic.ensure_mrisr()
            self.ui.applyButton.enabled = False
            self.ui.progressBar.setVisible(True)
            self.onProgress(0.0)
            try:
                outputNode = self.logic.process(inputNode, model, spacing, device,
                                                progress_callback=self.onProgress, log_callback=self.onLog)
            finally:
                self.ui.progressBar.setVisible(False)
                self.updateApplyButtonState()
            # The result over its input, so the slice views' fade slider compares the two.
            slicer.util.setSliceViewerLayers(background=inputNode, foreground=outputNode, foregroundOpacity=1.0)
            self.onLog(f"Created '{outputNode.GetName()}'.")


#
# MRISRLogic
#


def mrisr_available() -> bool:
    """Whether Slicer's Python can import mrisr (found without importing it: the CLI runs it, not Slicer)."""
    importlib.invalidate_caches()
    return importlib.util.find_spec("mrisr") is not None


def installed_version(package: str) -> str | None:
    """The installed distribution's version (``None`` when absent), without importing the package."""
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        version = None
    if version is None and package == "SimpleITK":  # a build without pip metadata
        try:
            import SimpleITK

            version = SimpleITK.Version_VersionString()
        except (ImportError, AttributeError):
            version = None
    return version if version and _VERSION.match(version) else None


def parse_progress(line: str) -> float | None:
    """The fraction done (0..1) of a tqdm progress line, e.g. ``"  45%|####  | 9/20 [...]"`` -> 0.45.

    ``None`` for any other line (log lines, the final ``wrote ...`` line, errors).
    """
    match = _PROGRESS.search(line)
    if match is None:
        return None
    return min(max(float(match.group(1)) / 100.0, 0.0), 1.0)


class MRISRLogic(ScriptedLoadableModuleLogic):
    """Runs ``mrisr upscale`` on a volume node. No GUI: usable from the Python console and tests::

        logic = MRISRLogic()
        logic.ensure_mrisr()
        srNode = logic.process(getNode("MRHead"), "/models/t2-x3/best/model.json", 0.0, "auto")
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

    # -- installation --------------------------------------------------------------------

    def constraints(self) -> list[str]:
        """pip constraint lines pinning the protected packages Slicer already has to their versions."""
        lines = []
        for package in PROTECTED_PACKAGES:
            version = installed_version(package)
            if version is not None:
                lines.append(f"{package}=={version}")
        return lines

    def ensure_mrisr(self) -> None:
        """Install mrisr into Slicer's Python unless it is there already.

        The requirement is PyPI's ``mrisr``, or the path in the ``MRISR_SOURCE`` environment variable
        (a source checkout or a wheel). Slicer ships its own SimpleITK build (and numpy; torch may come
        from the PyTorch extension): pip gets a constraints file pinning each of them to the installed
        version, so it keeps them instead of "upgrading" them, and stops with a clear resolver error
        when mrisr cannot use the installed version, rather than breaking Slicer. (SlicerTotalSegmentator
        instead installs with ``--no-deps`` and edits the package metadata; a constraints file needs
        neither, and pip still installs mrisr's other dependencies.)

        Raises ``subprocess.CalledProcessError`` when pip fails and ``RuntimeError`` when mrisr is
        still not importable afterwards.
        """
        if mrisr_available():
            return
        requirement = os.environ.get(SOURCE_ENV, "").strip() or "mrisr"
        folder = tempfile.mkdtemp(prefix="MRISR-pip-")
        try:
            constraints = os.path.join(folder, "constraints.txt")
            with open(constraints, "w", encoding="utf-8") as f:
                f.write("# Slicer's own packages: keep them (written by the MRISR module)\n")
                f.writelines(line + "\n" for line in self.constraints())
            logging.info("MRISR: installing %s into Slicer's Python (constraints: %s)", requirement,
                         ", ".join(self.constraints()))
            # A list, not one string: each item is one argument, so paths with spaces survive.
            slicer.util.pip_install([requirement, "-c", constraints])
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        if not mrisr_available():
            raise RuntimeError("mrisr was installed but cannot be imported; restart Slicer and try again.")

    # -- running -------------------------------------------------------------------------

    @staticmethod
    def python_executable() -> str:
        """Slicer's Python launcher (PythonSlicer sets up Slicer's environment), else this interpreter."""
        return shutil.which("PythonSlicer") or sys.executable

    def build_command(self, input_path: str, output_path: str, model: str, spacing: float = 0.0,
                      device: str = "auto") -> list[str]:
        """The ``mrisr upscale`` command line; ``spacing`` 0 keeps mrisr's default (isotropic, finest)."""
        command = [self.python_executable(), "-m", "mrisr.cli", "upscale", str(input_path),
                   "-o", str(output_path), "--model", str(model)]
        if spacing and spacing > 0:
            command += ["--spacing", str(spacing)]
        command += ["--device", str(device), "--force"]
        return command

    def process(self, inputNode, model: str, spacing: float = 0.0, device: str = "auto",
                progress_callback: Callable[[float], None] | None = None,
                log_callback: Callable[[str], None] | None = None):
        """Super-resolve ``inputNode`` and return the new volume node named ``"<input> SR"``.

        Saves the node to a temporary NIfTI, runs :meth:`build_command` with
        ``slicer.util.launchConsoleProcess`` (stdout and stderr merged, universal newlines, so each
        tqdm redraw is a line), reports progress lines to ``progress_callback`` and the other lines to
        ``log_callback``, and loads the output. The temporary folder is removed in any case.

        Raises ``ValueError`` for missing inputs and ``RuntimeError`` when saving, upscaling or
        loading fails; for a failed run the message holds mrisr's one-line ``mrisr: error: ...``.
        """
        if inputNode is None:
            raise ValueError("No input volume selected.")
        if not str(model).strip():
            raise ValueError("No model selected: give a model card (.json), weights or a run directory.")
        base = getattr(slicer.app, "temporaryPath", None)
        folder = tempfile.mkdtemp(prefix="MRISR-", dir=base if base and os.path.isdir(base) else None)
        try:
            inputPath = os.path.join(folder, "input.nii.gz")
            outputPath = os.path.join(folder, "output.nii.gz")
            self._save(inputNode, inputPath)
            command = self.build_command(inputPath, outputPath, model, spacing, device)
            logging.info("MRISR: %s", " ".join(command))
            proc = slicer.util.launchConsoleProcess(command, useStartupEnvironment=False)
            lines = self._stream(proc, progress_callback, log_callback)
            returncode = proc.wait()
            if returncode != 0:
                raise RuntimeError(f"mrisr upscale failed (exit status {returncode}): {_error_line(lines)}")
            if progress_callback is not None:
                progress_callback(1.0)
            name = f"{inputNode.GetName()} SR"
            outputNode = slicer.util.loadVolume(outputPath, {"name": name})
            if not outputNode:
                raise RuntimeError(f"Slicer could not load the result {outputPath}")
            outputNode.SetName(name)
            return outputNode
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def _save(node, path: str) -> None:
        """Write ``node`` to ``path``, leaving the node's own storage (its file name) as it was."""
        storage = node.GetStorageNode()
        previous = storage.GetFileName() if storage else None
        ok = slicer.util.saveNode(node, path)
        if storage and previous is not None:
            storage.SetFileName(previous)  # the temporary file is deleted; "Save" must not offer it
        if ok is False:
            raise RuntimeError(f"Slicer could not save '{node.GetName()}' to {path}")

    @staticmethod
    def _stream(proc, progress_callback, log_callback) -> list[str]:
        """Read the process output line by line until it ends; returns the non-progress lines."""
        lines = []
        last = None
        while True:
            line = proc.stdout.readline()
            if not line:
                break
            line = line.rstrip()
            if not line:
                continue
            fraction = parse_progress(line)
            if fraction is None:
                lines.append(line)
                logging.info("%s", line)
                if log_callback is not None:
                    log_callback(line)
            elif progress_callback is not None and fraction != last:
                progress_callback(fraction)
                last = fraction
            slicer.app.processEvents()  # keep the GUI responsive while the process runs
        return lines


def _error_line(lines: list[str]) -> str:
    """mrisr's own one-line error when it printed one, else the last line of output."""
    for line in reversed(lines):
        if line.startswith(("mrisr: error:", "mrisr: internal error:")):
            return line
    return lines[-1] if lines else "(no output)"


#
# MRISRTest
#


class MRISRTest(ScriptedLoadableModuleTest):
    """Smoke test; runs only inside Slicer (the "Reload and Test" button, or ctest in a Slicer build).

    Outside Slicer, tests/slicer/test_slicer_module.py checks the logic against a fake ``slicer``.
    A full upscale runs when the environment variable ``MRISR_TEST_MODEL`` names a model.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_MRISR_command_and_progress()
        self.test_MRISR_upscale()

    def test_MRISR_command_and_progress(self):
        self.delayDisplay("MRISR: command line and progress parsing")
        logic = MRISRLogic()
        command = logic.build_command("in.nii.gz", "out.nii.gz", "model.json", 0.5, "cpu")
        self.assertEqual(command[1:], ["-m", "mrisr.cli", "upscale", "in.nii.gz", "-o", "out.nii.gz", "--model",
                                       "model.json", "--spacing", "0.5", "--device", "cpu", "--force"])
        self.assertAlmostEqual(parse_progress("upscale:  45%|####5     | 9/20 [00:01<00:02]"), 0.45)
        self.assertIsNone(parse_progress("wrote out.nii.gz"))

    def test_MRISR_upscale(self):
        model = os.environ.get("MRISR_TEST_MODEL")
        if not model:
            self.delayDisplay("MRISR: MRISR_TEST_MODEL not set, upscale skipped")
            return
        import numpy as np

        self.delayDisplay("MRISR: upscale a synthetic volume")
        array = np.zeros((12, 32, 32), dtype=np.float32)  # K, J, I
        array[4:8, 8:24, 8:24] = 100.0
        inputNode = slicer.util.addVolumeFromArray(array, name="mrisrTestInput")
        inputNode.SetSpacing(1.0, 1.0, 3.0)
        logic = MRISRLogic()
        logic.ensure_mrisr()
        progress = []
        outputNode = logic.process(inputNode, model, 0.0, "cpu", progress_callback=progress.append)
        self.assertEqual(outputNode.GetName(), "mrisrTestInput SR")
        self.assertEqual(progress[-1], 1.0)
        self.assertLess(outputNode.GetSpacing()[2], 3.0)
        self.delayDisplay("MRISR: test passed")
