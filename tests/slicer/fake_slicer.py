"""A small stand-in for the parts of 3D Slicer's Python API that slicer/MRISR/MRISR.py uses.

3D Slicer cannot run in the test environment, so the tests import the module against these fakes:
``slicer`` (``app``, ``mrmlScene``), ``slicer.util`` (``saveNode``, ``loadVolume``,
``launchConsoleProcess``, ``pip_install``, ``loadUI``, ``childWidgetVariables`` and the dialogs),
``slicer.ScriptedLoadableModule`` (the four base classes) and the ``qt``, ``ctk`` and ``vtk``
modules. The ``slicer.util`` functions record their calls in :attr:`FakeSlicer.calls`; their
signatures follow Slicer 5's ``slicer/util.py``. :func:`install` puts them in ``sys.modules``.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


class Dummy:
    """Any Qt/CTK/VTK object: every attribute is another Dummy, every call returns one, and
    ``connect(signal, slot)`` is recorded in :attr:`connections`."""

    def __init__(self, name: str = "dummy") -> None:
        self.__dict__["_name"] = name
        self.__dict__["connections"] = []

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        child = Dummy(f"{self._name}.{attr}")
        self.__dict__[attr] = child
        return child

    def __call__(self, *args: Any, **kwargs: Any) -> Dummy:
        return Dummy(f"{self._name}()")

    def connect(self, signal: str, slot: Callable) -> None:
        self.connections.append((signal, slot))

    def __repr__(self) -> str:
        return f"<Dummy {self._name}>"


class DummyModule(types.ModuleType):
    """A module whose every attribute is a :class:`Dummy` (``qt.QSettings``, ``vtk.vtkMatrix4x4``...)."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        value = Dummy(f"{self.__name__}.{attr}")
        setattr(self, attr, value)
        return value


class FakeStorageNode:
    def __init__(self, file_name: str | None) -> None:
        self.file_name = file_name

    def GetFileName(self) -> str | None:
        return self.file_name

    def SetFileName(self, name: str) -> None:
        self.file_name = name


class FakeVolumeNode:
    """A scalar volume node: a name, an id and an optional storage node."""

    _count = 0

    def __init__(self, name: str, file_name: str | None = None) -> None:
        FakeVolumeNode._count += 1
        self.name = name
        self.id = f"vtkMRMLScalarVolumeNode{FakeVolumeNode._count}"
        self.storage = FakeStorageNode(file_name) if file_name else None

    def GetName(self) -> str:
        return self.name

    def SetName(self, name: str) -> None:
        self.name = name

    def GetID(self) -> str:
        return self.id

    def GetStorageNode(self) -> FakeStorageNode | None:
        return self.storage


class FakeSettings:
    """``qt.QSettings``: one in-memory store per :class:`FakeSlicer`."""

    store: dict[str, Any] = {}

    def value(self, key: str, default: Any = None) -> Any:
        return self.store.get(key, default)

    def setValue(self, key: str, value: Any) -> None:
        self.store[key] = value


class FakeProcess:
    """What ``launchConsoleProcess`` returns: a Popen with stdout and stderr merged and
    ``universal_newlines=True``, so tqdm's carriage returns read as line ends."""

    def __init__(self, args: list[str], output: str, returncode: int = 0) -> None:
        self.args = args
        self.stdout = io.TextIOWrapper(io.BytesIO(output.encode("utf-8")), encoding="utf-8", newline=None)
        self.returncode: int | None = None
        self._returncode = returncode

    def wait(self) -> int:
        self.returncode = self._returncode
        return self._returncode

    def poll(self) -> int | None:
        return self.returncode


def slicer_popen(args: list[str]) -> subprocess.Popen:
    """A real process started as Slicer's ``launchConsoleProcess`` starts it (POSIX branch):
    stdout piped, stderr into stdout, ``universal_newlines=True``. A ``process_factory``."""
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)


class FakeUIWidget(Dummy):
    """``slicer.util.loadUI``'s result: the widgets named in the .ui file, and nothing else."""

    def __init__(self, path: str) -> None:
        super().__init__(f"ui:{Path(path).name}")
        root = ET.parse(path).getroot()
        names = {w.get("name"): w.get("class") for w in root.iter("widget")}
        self.__dict__["widget_classes"] = names


class FakeSlicer:
    """The state behind the fake modules: recorded calls and the hooks tests set."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        #: ``launchConsoleProcess(args)`` returns ``process_factory(args)``.
        self.process_factory: Callable[[list[str]], FakeProcess] | None = None
        #: Called by ``pip_install`` after recording (e.g. to make the package importable).
        self.on_pip_install: Callable[[Any], None] | None = None
        #: Text of files pip_install's arguments named (constraints files are deleted after the call).
        self.pip_files: dict[str, str] = {}
        self.temporary_path = ""
        #: What the module stored with qt.QSettings.
        self.settings: dict[str, Any] = {}
        self.modules: dict[str, types.ModuleType] = {}
        self._build()

    def called(self, name: str) -> list[tuple[tuple, dict]]:
        return [(args, kwargs) for n, args, kwargs in self.calls if n == name]

    # -- slicer.util ---------------------------------------------------------------------

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((name, args, kwargs))

    def saveNode(self, node: FakeVolumeNode, filename: str, properties: dict | None = None) -> bool:
        self._record("saveNode", node, filename, properties)
        Path(filename).write_bytes(b"fake NIfTI")
        if node.storage is None:
            node.storage = FakeStorageNode(None)
        node.storage.SetFileName(filename)  # as Slicer's writers do
        return True

    def loadVolume(self, filename: str, properties: dict | None = None, returnNode: bool = False):
        self._record("loadVolume", filename, properties)
        if not os.path.exists(filename):
            raise RuntimeError(f"Failed to load node from file: {filename}")
        return FakeVolumeNode((properties or {}).get("name", Path(filename).name), filename)

    def launchConsoleProcess(self, args, useStartupEnvironment=True, updateEnvironment=None, cwd=None):
        self._record("launchConsoleProcess", list(args), useStartupEnvironment=useStartupEnvironment,
                     updateEnvironment=updateEnvironment, cwd=cwd)
        if self.process_factory is None:
            raise AssertionError("the test set no process_factory")
        return self.process_factory(list(args))

    def pip_install(self, requirements) -> None:
        self._record("pip_install", requirements)
        items = requirements if isinstance(requirements, list) else requirements.split()
        for item in items:
            if os.path.isfile(item):
                self.pip_files[item] = Path(item).read_text(encoding="utf-8")
        if self.on_pip_install is not None:
            self.on_pip_install(requirements)

    def loadUI(self, path: str) -> FakeUIWidget:
        self._record("loadUI", path)
        return FakeUIWidget(path)

    def childWidgetVariables(self, widget: FakeUIWidget) -> types.SimpleNamespace:
        return types.SimpleNamespace(**{name: Dummy(name) for name in widget.widget_classes})

    @contextlib.contextmanager
    def tryWithErrorDisplay(self, message: str | None = None, show: bool = True, waitCursor: bool = False):
        try:
            yield
        except Exception as exc:  # Slicer shows a dialog and carries on; keep it for the test
            self._record("errorDisplay", message, exc)

    def _build(self) -> None:
        slicer = types.ModuleType("slicer")
        slicer.__path__ = []  # a package, so "slicer.util" imports
        util = types.ModuleType("slicer.util")
        for name in ("saveNode", "loadVolume", "launchConsoleProcess", "pip_install", "loadUI",
                     "childWidgetVariables", "tryWithErrorDisplay"):
            setattr(util, name, getattr(self, name))
        util.confirmOkCancelDisplay = lambda *a, **k: (self._record("confirmOkCancelDisplay", *a, **k), True)[1]
        util.errorDisplay = lambda *a, **k: self._record("errorDisplay", *a, **k)
        util.setSliceViewerLayers = lambda *a, **k: self._record("setSliceViewerLayers", *a, **k)
        util.VTKObservationMixin = type("VTKObservationMixin", (), {})

        slm = types.ModuleType("slicer.ScriptedLoadableModule")

        class ScriptedLoadableModule:
            def __init__(self, parent: Any) -> None:
                self.parent = parent

        class ScriptedLoadableModuleWidget:
            #: The scripted module's folder (Slicer finds it from the module's path); set by install().
            module_dir = ""

            def __init__(self, parent: Any = None) -> None:
                self.parent = parent
                self.layout = Dummy("layout")

            def resourcePath(self, filename: str) -> str:
                return os.path.join(self.module_dir, "Resources", filename)

            def setup(self) -> None:
                pass

        class ScriptedLoadableModuleLogic:
            def __init__(self, parent: Any = None) -> None:
                self.parent = parent

        class ScriptedLoadableModuleTest:
            def delayDisplay(self, message: str, msec: int = 1000) -> None:
                print(message)

        for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                    ScriptedLoadableModuleTest):
            setattr(slm, cls.__name__, cls)

        state = self

        class _App(Dummy):
            @property
            def temporaryPath(self) -> str:
                return state.temporary_path

        app = _App("slicer.app")
        app.__dict__["processEvents"] = lambda *a: None
        slicer.app = app
        slicer.mrmlScene = Dummy("slicer.mrmlScene")
        slicer.util = util
        slicer.ScriptedLoadableModule = slm
        slicer.modules = Dummy("slicer.modules")
        qt = DummyModule("qt")
        qt.QSettings = type("QSettings", (FakeSettings,), {"store": self.settings})
        self.modules = {
            "slicer": slicer,
            "slicer.util": util,
            "slicer.ScriptedLoadableModule": slm,
            "qt": qt,
            "ctk": DummyModule("ctk"),
            "vtk": DummyModule("vtk"),
        }


@contextlib.contextmanager
def install(module_file: Path, module_name: str = "MRISR") -> Iterator[tuple[types.ModuleType, FakeSlicer]]:
    """Put the fakes in ``sys.modules``, import ``module_file`` against them; restore on exit."""
    import importlib.util

    fake = FakeSlicer()
    names = [*fake.modules, module_name]
    saved = {name: sys.modules[name] for name in names if name in sys.modules}
    sys.modules.update(fake.modules)
    try:
        spec = importlib.util.spec_from_file_location(module_name, module_file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        fake.modules["slicer.ScriptedLoadableModule"].ScriptedLoadableModuleWidget.module_dir = str(
            Path(module_file).parent)
        yield module, fake
    finally:
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)

