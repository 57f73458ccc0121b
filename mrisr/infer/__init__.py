"""Inference: ``upscale(volume, model) -> Volume`` onto a field-of-view-preserving grid.

- :mod:`.grid`: the target grid and the upsampled (coarse) axis, pure geometry.
- :mod:`.predict`: loading a model and running it (2D planes, fused; 3D sliding windows).
- :mod:`.job`: one file in, one file and its sidecar out (``mrisr upscale``, batch workers).

``upscale`` and ``load_model`` are imported on first use, so that ``mrisr.infer.job`` can check
outputs before torch and MONAI are loaded (seconds).
"""

from typing import Any

from .grid import coarse_axis, target_grid, upsampled_axes

__all__ = ["upscale", "load_model", "target_grid", "upsampled_axes", "coarse_axis"]


def __getattr__(name: str) -> Any:
    if name in ("upscale", "load_model"):
        from . import predict

        return getattr(predict, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
