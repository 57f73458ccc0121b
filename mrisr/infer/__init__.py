"""Inference: ``upscale(volume, model) -> Volume`` onto a field-of-view-preserving grid.

- :mod:`.grid`: the target grid and the upsampled (coarse) axis, pure geometry.
- :mod:`.predict`: loading a model and running it (2D planes, fused; 3D sliding windows).
"""

from .grid import coarse_axis, target_grid, upsampled_axes
from .predict import load_model, upscale

__all__ = ["upscale", "load_model", "target_grid", "upsampled_axes", "coarse_axis"]
