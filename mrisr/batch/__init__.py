"""Batch processing of scan archives: discovery of the work (:mod:`.discover`) and a
resumable SQLite ledger of its state (:mod:`.ledger`)."""

from __future__ import annotations

from .discover import Item, discover, item_files, plan_json, plan_table

__all__ = ["Item", "discover", "item_files", "plan_json", "plan_table"]
