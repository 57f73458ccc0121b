"""Evaluation: metrics against a reference (:func:`evaluate`) and visual reports (:func:`write_report`)."""

from .metrics import evaluate

__all__ = ["evaluate"]
