"""Batch processing of scan archives (``mrisr batch``).

- :mod:`.discover`: the items (volume files, DICOM series) in folders and archives.
- :mod:`.ledger`: the resumable SQLite ledger of their state.
- :mod:`.runner`: planning and running a batch (the coordinator); :mod:`.backends` and
  :mod:`.ray_backend` run its tasks (:mod:`.worker`).
- :mod:`.outputs`: where outputs go (mirror or BIDS derivatives); :mod:`.report`: plan, summary, status.
- :mod:`.command`: the ``mrisr batch`` command.
"""

from __future__ import annotations

from .discover import Item, discover, item_files, plan_json, plan_table
from .ledger import LEDGER_NAME, Ledger, item_key, params_hash
from .runner import BatchInterrupted, BatchOptions, Plan, plan_batch, run_batch

__all__ = [
    "Item", "discover", "item_files", "plan_json", "plan_table", "Ledger", "LEDGER_NAME", "item_key", "params_hash",
    "BatchOptions", "BatchInterrupted", "Plan", "plan_batch", "run_batch",
]
