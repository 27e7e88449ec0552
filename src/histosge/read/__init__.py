"""Read one section (counts, spot positions, H&E image) into the AnnData of docs/ARCHITECTURE.md."""

from .h5ad import read_h5ad
from .image import ImageSource, image_for
from .legacy_st import read_her2st, read_legacy_st
from .resolve import read_section
from .spaceranger import read_spaceranger

__all__ = [
    "ImageSource",
    "image_for",
    "read_h5ad",
    "read_her2st",
    "read_legacy_st",
    "read_section",
    "read_spaceranger",
]
