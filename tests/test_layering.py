"""The package's import layering (tests/layering.yaml), over every import statement of every
module, function-level imports included; and a test that the check finds a forbidden edge."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RULES = Path(__file__).resolve().parent / "layering.yaml"


def module_imports(root: Path, package: str) -> list[tuple[str, str, int]]:
    """``(module, imported module, line)`` for every import of ``package`` modules under ``root``
    (the folder holding the package), relative imports resolved to absolute names."""
    found = []
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        is_init = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_init else parts)
        base = module.split(".") if is_init else module.split(".")[:-1]  # the module's package
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found += [(module, alias.name, node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base[: len(base) - (node.level - 1)]
                    target = ".".join([*anchor, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                found.append((module, target, node.lineno))
                # `from . import x` imports the submodule x when there is one
                found += [(module, f"{target}.{alias.name}", node.lineno) for alias in node.names]
    return [(m, t, line) for m, t, line in found if t == package or t.startswith(package + ".")]


def _under(name: str, prefixes: list[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def forbidden_imports(root: Path, package: str, rules_path: Path = RULES) -> list[str]:
    """The imports that break a rule of ``rules_path``, one line each (empty when none)."""
    rules = yaml.safe_load(rules_path.read_text(encoding="utf-8"))["forbid"]
    broken: dict[tuple[str, int, str], str] = {}  # one line per import statement and rule
    for module, target, line in module_imports(root, package):
        for rule in rules:
            if (_under(module, rule["from"]) and not _under(module, rule.get("except", []))
                    and _under(target, rule["to"])):
                key = (module, line, rule["why"])
                broken[key] = min(broken.get(key, target), target, key=len)
    return [f"{m} (line {line}) imports {t}: {why}" for (m, line, why), t in sorted(broken.items())]


def test_the_package_keeps_its_layers() -> None:
    broken = forbidden_imports(REPO, "mrisr")
    assert not broken, "forbidden imports:\n" + "\n".join(broken)


def test_the_check_finds_a_forbidden_import(tmp_path: Path) -> None:
    """A copy of the package with one forbidden edge added (a function-level relative import, the
    kind that hid the old cycle) fails the check; without it, the copy passes."""
    import shutil

    shutil.copytree(REPO / "mrisr", tmp_path / "mrisr", ignore=shutil.ignore_patterns("*.safetensors", "*.nii.gz"))
    assert forbidden_imports(tmp_path, "mrisr") == []
    predict = tmp_path / "mrisr" / "infer" / "predict.py"
    predict.write_text(predict.read_text() + "\n\ndef _sneaky():\n    from ..train.engine import train\n")
    broken = forbidden_imports(tmp_path, "mrisr")
    assert len(broken) == 1 and "mrisr.infer.predict" in broken[0] and "mrisr.train.engine" in broken[0], broken
    cli_user = tmp_path / "mrisr" / "volume.py"
    cli_user.write_text(cli_user.read_text() + "\nimport mrisr.cli  # noqa\n")
    assert any("mrisr.volume" in b and "mrisr.cli" in b for b in forbidden_imports(tmp_path, "mrisr"))
