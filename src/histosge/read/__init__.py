"""Read one section (counts, spot positions, H&E image) into the AnnData of docs/ARCHITECTURE.md.

The names below are imported on first use (PEP 562): ``histosge.read.formats`` (which files are
images) is read by the CLI before any work, without the readers' imports.
"""

from .._lazy import lazy_names

_LAZY = {"ImageSource": ".image", "image_for": ".image", "read_h5ad": ".h5ad", "read_her2st": ".legacy_st",
         "read_legacy_st": ".legacy_st", "read_section": ".resolve", "read_spaceranger": ".spaceranger"}

__getattr__ = lazy_names(__name__, _LAZY, globals())

__all__ = [
    "ImageSource",
    "image_for",
    "read_h5ad",
    "read_her2st",
    "read_legacy_st",
    "read_section",
    "read_spaceranger",
]
