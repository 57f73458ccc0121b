"""RAS inside, LPS at the edge: the one matrix between the two patient spaces.

DICOM and ITK use LPS (x: right->Left, y: anterior->Posterior, z: inferior->Superior);
mrisr's affines are RAS. The map flips x and y and is its own inverse.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LPS_TO_RAS", "flip_lps_ras"]

#: diag(-1, -1, 1, 1): LPS <-> RAS (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
LPS_TO_RAS.flags.writeable = False


def flip_lps_ras(affine: np.ndarray) -> np.ndarray:
    """A 4x4 affine in LPS given one in RAS, or in RAS given one in LPS."""
    return LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
