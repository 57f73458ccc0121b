"""The shipped models: the registry of ``<name>.safetensors`` + ``<name>.json`` in this folder,
the default model for an input's anisotropy, and the shipping tool (:mod:`mrisr.models.ship`).

- :mod:`.registry`: :data:`SHIPPED_MODELS` (name -> card path, read live from the folder),
  :func:`model_summary` (what ``mrisr models`` lists).
- :mod:`.defaults`: :func:`resolve_model` (the default for a volume's voxel spacing).
"""

from .defaults import ANISOTROPIC, THICK_SLICE, default_model_name, resolve_model
from .registry import MODELS_DIR, SHIPPED_MODELS, model_summary, shipped_models

__all__ = [
    "resolve_model",
    "default_model_name",
    "THICK_SLICE",
    "ANISOTROPIC",
    "SHIPPED_MODELS",
    "MODELS_DIR",
    "shipped_models",
    "model_summary",
]
