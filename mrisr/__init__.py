"""mrisr: MRI super-resolution with exact geometry.

The public API: :func:`load`, :func:`save`, :class:`Volume`, :func:`list_series`
and the :class:`MrisrError` hierarchy.
"""

__version__ = "0.1.0"  # before the imports: submodules read it

from . import train  # a light, callable package: mrisr.train(...) trains
from .errors import GeometryError, InputError, MrisrError, OutputError, ProtocolError
from .io import list_series, load, save
from .volume import Volume

__all__ = [
    "__version__",
    "load",
    "train",
    "save",
    "list_series",
    "Volume",
    "MrisrError",
    "InputError",
    "GeometryError",
    "OutputError",
    "ProtocolError",
]
