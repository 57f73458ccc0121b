"""Batch processing of scan archives: discovery of the work (:mod:`.discover`) and a
resumable SQLite ledger of its state (:mod:`.ledger`)."""

from __future__ import annotations

from .discover import Item, discover, item_files, plan_json, plan_table
from .ledger import LEDGER_NAME, Ledger, item_key, params_hash

__all__ = [
    "Item", "discover", "item_files", "plan_json", "plan_table", "Ledger", "LEDGER_NAME", "item_key", "params_hash"
]
