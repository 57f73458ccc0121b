"""Training: patch pairs (data), the MONAI engine and its handlers, checkpoints.

``mrisr.train(...)`` is :func:`mrisr.train.engine.train` (this package is callable), so
``mrisr.train`` is both the API function and the package holding its parts. The heavy
imports (MONAI, ignite) happen on the first call, not on ``import mrisr``.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .engine import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
