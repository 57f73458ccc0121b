"""The whole repository passes `ruff check` (rules in pyproject.toml [tool.ruff])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(120)
def test_ruff_check_is_clean() -> None:
    ruff = Path(sys.executable).parent / "ruff"  # installed by the `dev` extra
    if not ruff.exists():
        pytest.skip(f"needs {ruff} (pip install -e '.[dev]')")
    result = subprocess.run(
        [str(ruff), "check", "--output-format", "concise", "--no-fix", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"ruff check found problems:\n{result.stdout}{result.stderr}"
