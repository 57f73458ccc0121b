"""The ``MrisrError`` hierarchy.

Every error names the file or parameter, the problem and the fix, so that the
CLI can print it as one line: ``<where>: <problem>. Fix: <fix>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

__all__ = [
    "MrisrError",
    "InputError",
    "SeveralSeriesError",
    "GeometryError",
    "OutputError",
    "ProtocolError",
]


class MrisrError(Exception):
    """Base class of every error mrisr raises on purpose.

    Args:
        problem: what is wrong, naming the value received where there is one.
        path: the file, folder or parameter concerned (optional).
        fix: what the user can do about it (optional).
    """

    def __init__(
        self, problem: str, path: str | PathLike[str] | None = None, fix: str | None = None
    ) -> None:
        self.problem = problem.rstrip(". ")
        self.path = None if path is None else str(path)
        self.fix = None if fix is None else fix.rstrip(". ")
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The message as one line: ``path: problem. Fix: fix.``"""
        text = self.problem if self.path is None else f"{self.path}: {self.problem}"
        if self.fix:
            text += f"{'' if text.endswith(('?', '!')) else '.'} Fix: {self.fix}"
        return " ".join(text.split()) + ("" if text.endswith(("?", "!")) else ".")


class InputError(MrisrError, ValueError):
    """An input file or argument cannot be read or is not what it must be."""


class SeveralSeriesError(InputError):
    """An input holds several DICOM series and none was named; ``series`` lists them
    (:class:`mrisr.io.SeriesInfo`), so that a caller can show the choice instead of failing."""

    def __init__(self, problem: str, path: str | PathLike[str] | None = None, fix: str | None = None,
                 series: Sequence[Any] = ()) -> None:
        super().__init__(problem, path, fix)
        self.series = list(series)


class GeometryError(MrisrError, ValueError):
    """The geometry of an input is inconsistent (missing slice, tilt, non-uniform gaps...)."""


class OutputError(MrisrError, ValueError):
    """An output cannot be written (exists without ``force``, bad format, unsafe path)."""


class ProtocolError(MrisrError, ValueError):
    """A protocol file is invalid (unknown key, wrong type, value out of range)."""
