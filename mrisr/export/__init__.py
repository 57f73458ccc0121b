"""Writing results back: JSON sidecars (later: Slicer scenes, bundles)."""

from .sidecar import sha256_file, sidecar_path, write_sidecar

__all__ = ["sha256_file", "sidecar_path", "write_sidecar"]
