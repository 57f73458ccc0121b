"""Writing results back: JSON sidecars and 3D Slicer scene bundles (``.mrb``)."""

from .sidecar import sha256_file, sidecar_path, write_sidecar
from .slicer import write_mrb

__all__ = ["sha256_file", "sidecar_path", "write_sidecar", "write_mrb"]
