"""Evaluation: metrics against a reference (:func:`evaluate`) and visual reports (:func:`write_report`)."""

from .metrics import evaluate
from .report import write_report

__all__ = ["evaluate", "write_report"]
