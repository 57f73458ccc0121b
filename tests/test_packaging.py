"""The set-up files tell one story: pyproject.toml, environment.yml, the Makefile,
.ci/run and the README's first commands."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]

#: PyPI name -> conda-forge name, where they differ by more than case/-/_/.
PIP_TO_CONDA = {"torch": "pytorch", "SimpleITK": "simpleitk"}

#: Entries of environment.yml that are not packages of pyproject's lists.
ENV_ONLY = {"python", "pip"}


def normalise(name: str) -> str:
    """Compare names as conda-forge spells them: PEP 503 rules plus PIP_TO_CONDA."""
    name = PIP_TO_CONDA.get(name, name)
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_conda_spec(spec: str) -> tuple[str, SpecifierSet]:
    """``'pytorch>=2.4,<3'`` (or ``'pytorch >=2.4,<3'``) -> ``('pytorch', SpecifierSet)``."""
    match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*([<>=!~].*)?", spec)
    assert match, f"environment.yml: cannot parse dependency {spec!r}"
    name, version = match.groups()
    return name, SpecifierSet((version or "").replace(" ", ""))


def as_dict(pairs: list[tuple[str, SpecifierSet]], where: str) -> dict[str, SpecifierSet]:
    out: dict[str, SpecifierSet] = {}
    for name, spec in pairs:
        key = normalise(name)
        assert key not in out, f"{where}: {name} is listed twice"
        out[key] = spec
    return out


@pytest.fixture(scope="module")
def pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


@pytest.fixture(scope="module")
def environment() -> dict:
    with open(REPO / "environment.yml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def pyproject_requirements(pyproject: dict, group: str) -> dict[str, SpecifierSet]:
    """``group`` is ``'runtime'`` or the name of an optional-dependencies extra."""
    project = pyproject["project"]
    lines = (
        project["dependencies"] if group == "runtime" else project["optional-dependencies"][group]
    )
    reqs = [Requirement(line) for line in lines]
    for req in reqs:
        assert not req.marker and not req.extras and not req.url, (
            f"pyproject.toml: {req} has markers/extras/url that environment.yml cannot mirror"
        )
    return as_dict([(r.name, r.specifier) for r in reqs], f"pyproject.toml [{group}]")


def environment_requirements(environment: dict) -> dict[str, SpecifierSet]:
    """Every package of environment.yml, conda's and its pip: section's, minus ENV_ONLY."""
    pairs: list[tuple[str, SpecifierSet]] = []
    for entry in environment["dependencies"]:
        if isinstance(entry, dict):
            assert set(entry) == {"pip"}, f"environment.yml: unexpected block {sorted(entry)}"
            for line in entry["pip"]:
                if line.startswith("-"):  # "-e ." installs mrisr itself
                    continue
                req = Requirement(line)
                pairs.append((req.name, req.specifier))
        else:
            name, spec = parse_conda_spec(str(entry))
            if name not in ENV_ONLY:
                pairs.append((name, spec))
    return as_dict(pairs, "environment.yml")


def test_environment_header(environment: dict, pyproject: dict) -> None:
    assert environment["name"] == "mrisr"
    assert environment["channels"] == ["conda-forge"]
    conda = [e for e in environment["dependencies"] if isinstance(e, str)]
    python = [parse_conda_spec(e)[1] for e in conda if parse_conda_spec(e)[0] == "python"]
    assert python == [SpecifierSet(pyproject["project"]["requires-python"])]
    assert "pip" in conda
    pip = [e for e in environment["dependencies"] if isinstance(e, dict)]
    assert len(pip) == 1 and "-e ." in pip[0]["pip"], "environment.yml must install mrisr (-e .)"


@pytest.mark.parametrize("group", ["runtime", "test", "dev"])
def test_environment_has_pyproject_packages(pyproject: dict, environment: dict, group: str) -> None:
    wanted = pyproject_requirements(pyproject, group)
    have = environment_requirements(environment)
    missing = sorted(set(wanted) - set(have))
    assert not missing, f"environment.yml lacks {missing} of pyproject.toml [{group}]"
    differ = {k: (str(wanted[k]), str(have[k])) for k in wanted if wanted[k] != have[k]}
    assert not differ, f"version bounds differ (pyproject, environment.yml): {differ}"


def test_environment_has_nothing_else(pyproject: dict, environment: dict) -> None:
    groups = ["runtime", *pyproject["project"]["optional-dependencies"]]
    known: set[str] = set()
    for group in groups:
        known |= set(pyproject_requirements(pyproject, group))
    extra = sorted(set(environment_requirements(environment)) - known)
    assert not extra, f"environment.yml has {extra}, which pyproject.toml does not list"


def test_normalise_mapping() -> None:
    assert normalise("torch") == normalise("pytorch") == "pytorch"
    assert normalise("SimpleITK") == normalise("simpleitk") == "simpleitk"
    assert normalise("pylibjpeg_libjpeg") == normalise("PyLibJPEG.libjpeg") == "pylibjpeg-libjpeg"
    assert parse_conda_spec("pytorch >=2.4, <3") == ("pytorch", SpecifierSet(">=2.4,<3"))


# --- the set-up commands -------------------------------------------------------------------


def first_code_block(markdown: str) -> list[str]:
    """The non-blank lines of the first fenced code block."""
    match = re.search(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.S | re.M)
    assert match, "README.md has no fenced code block"
    return [line.strip() for line in match.group(1).splitlines() if line.strip()]


def test_readme_starts_with_make_demo_and_make_test() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert first_code_block(readme) == ["make demo", "make test"]


def command_lines(path: Path) -> list[str]:
    """Lines of a shell script or Makefile, without comments and blank lines."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def torch_requirement(pyproject: dict) -> Requirement:
    reqs = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    torch = [r for r in reqs if r.name == "torch"]
    assert len(torch) == 1, "pyproject.toml must list torch once"
    return torch[0]


def test_ci_runs_make_test_with_cpu_torch_pin(pyproject: dict) -> None:
    lines = command_lines(REPO / ".ci" / "run")
    assert "make test TORCH=torch==2.13.0" in lines
    # The pin must lie inside the range that pyproject allows.
    assert Version("2.13.0") in torch_requirement(pyproject).specifier


def test_makefile_takes_torch_from_variable(pyproject: dict) -> None:
    lines = command_lines(REPO / "Makefile")
    default = [line for line in lines if re.match(r"TORCH\s*\?=", line)]
    assert len(default) == 1, "Makefile must set `TORCH ?= ...` once"
    assert Requirement(default[0].split("?=", 1)[1].strip()) == torch_requirement(pyproject)
    installs = [line for line in lines if "pip install" in line and "$(TORCH)" in line]
    assert installs, "Makefile must pip install $(TORCH)"
    assert not any("pip install" in line and "torch=" in line for line in lines)


def test_pyproject_keeps_torch_a_range(pyproject: dict) -> None:
    spec = torch_requirement(pyproject).specifier
    operators = {s.operator for s in spec}
    assert operators, "torch must have version bounds"
    assert not operators & {"==", "===", "~="}, f"torch must be a range, not a pin: {spec}"
    assert operators & {">=", ">"}, f"torch needs a lower bound: {spec}"


def test_wheel_and_sdist_ship_the_models(tmp_path: Path) -> None:
    """The shipped models (mrisr/models/*.safetensors + *.json) go into the wheel and the sdist.

    Built from a copy of the sources with a stand-in model, so the check holds whether or
    not real weights are present, and the working tree gets no build/ folder.
    """
    import shutil
    import subprocess
    import tarfile
    import zipfile

    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ship-*")
    shutil.copytree(REPO / "mrisr", src / "mrisr", ignore=ignore)
    shutil.copytree(REPO / "protocols", src / "protocols", ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, src / name)
    (src / "mrisr" / "models" / "stand-in.safetensors").write_bytes(b"weights")
    (src / "mrisr" / "models" / "stand-in.json").write_text("{}")
    script = ("import setuptools.build_meta as b; w = b.build_wheel('dist'); s = b.build_sdist('dist'); "
              "print('BUILT', w, s)")
    done = subprocess.run([sys.executable, "-c", script], cwd=src, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel_name, sdist_name = [line for line in done.stdout.splitlines() if line.startswith("BUILT ")][-1].split()[1:]
    with zipfile.ZipFile(src / "dist" / wheel_name) as wheel:
        in_wheel = set(wheel.namelist())
    with tarfile.open(src / "dist" / sdist_name) as sdist:
        in_sdist = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    for member in ("mrisr/models/stand-in.safetensors", "mrisr/models/stand-in.json", "mrisr/models/ship.py"):
        assert member in in_wheel, f"{member} is not in the wheel"
        assert member in in_sdist, f"{member} is not in the sdist"


def _make_dry_run(*variables: str) -> list[str]:
    """The commands ``make -n -B demo`` would run with these variables (``-B``: as on a fresh clone)."""
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("needs make")
    result = subprocess.run(["make", "-n", "-B", "demo", *variables], cwd=REPO, capture_output=True, text=True,
                            check=True)
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def test_makefile_takes_the_torch_index_from_a_variable() -> None:
    """A CPU-only Linux user passes PyTorch's CPU index: torch comes from it, nothing else does."""
    index = "https://download.pytorch.org/whl/cpu"
    lines = _make_dry_run(f"TORCH_INDEX={index}")
    torch_installs = [line for line in lines if "pip install" in line and "torch" in line and "-e" not in line]
    assert torch_installs and all(f'--index-url "{index}"' in line for line in torch_installs), lines
    others = [line for line in lines if "pip install" in line and line not in torch_installs]
    assert others and not any("--index-url" in line for line in others), "only torch comes from the torch index"
    default = _make_dry_run()
    assert not any("--index-url" in line for line in default), "the default index is PyPI's (pip's own)"


def test_readme_tells_cpu_only_users_the_cpu_index_first() -> None:
    """Within the README's first lines, after the two commands: how to get the small CPU build."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    head = "\n".join(readme.splitlines()[:20])
    assert "make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu" in " ".join(head.split()), head


def test_ci_keeps_the_local_cpu_pin_without_an_index() -> None:
    lines = command_lines(REPO / ".ci" / "run")
    assert not any("TORCH_INDEX" in line for line in lines), "CI takes torch==2.13.0 from local disk"


def test_notebooks_extra_holds_jupyter(pyproject: dict) -> None:
    extra = [Requirement(r).name for r in pyproject["project"]["optional-dependencies"]["notebooks"]]
    assert "jupyterlab" in extra and "matplotlib" in extra
    assert any("notebooks" in line and "pip install" in line for line in command_lines(REPO / "Makefile"))


def test_readme_points_only_to_files_a_clone_has() -> None:
    """Every repository path the README names in backticks exists in the repository (globs match
    something), and it sends no user to the developers' design notes outside the repository."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "DESIGN.md" not in readme, "DESIGN.md lies outside the repository: a clone does not have it"
    tops = ("mrisr/", "tests/", "benchmarks/", "notebooks/", "protocols/", "slicer/", ".ci/")
    named = {m for m in re.findall(r"`([^`\s]+)`", readme) if m.startswith(tops)}
    assert named, "the README names no repository files: the pattern is broken"
    missing = sorted(m for m in named if not list(REPO.glob(m.rstrip("/"))))
    assert not missing, f"README names files a clone does not have: {missing}"


def test_readme_says_how_long_make_test_takes() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    text = " ".join(readme.split())
    match = re.search(r"`make test` creates the same `\.venv`.{0,400}?(\d+(?:\.\d+)?) min", text)
    assert match, "the README's make test paragraph must state its measured duration in minutes"
