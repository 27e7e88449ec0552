"""Image files by suffix: the one table of what histosge reads as an image, and which backend
(``read.image``) reads it. No heavy import: the CLI and cohort lists consult it before any work."""

from __future__ import annotations

#: Tiled or pyramidal TIFF, OME-TIFF, SVS ...: read with tifffile (``read.tiff``). Longer suffixes
#: first (``slide_name`` strips the first that matches).
TIFF_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".svs", ".btf", ".tf8", ".qptiff")
#: Vendor formats read through OpenSlide (``read.vendor``, ``pip install 'histosge[slides]'``).
VENDOR_SUFFIXES = (".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
#: Plain images decoded whole by PIL (``read.plain``); their pixel size must be given.
PLAIN_SUFFIXES = (".jpeg", ".jpg", ".png")
#: Whole-slide files.
SLIDE_SUFFIXES = TIFF_SUFFIXES + VENDOR_SUFFIXES
#: Every file that can be a slide to predict (a plain image with ``--mpp``).
IMAGE_SUFFIXES = SLIDE_SUFFIXES + PLAIN_SUFFIXES


def backend_for(name: str) -> str:
    """``"openslide"``, ``"tifffile"`` or ``"pil"``: the reader of a file called ``name``."""
    name = name.lower()
    if name.endswith(VENDOR_SUFFIXES):
        return "openslide"
    return "tifffile" if name.endswith(TIFF_SUFFIXES) else "pil"


def strip_suffix(name: str) -> str | None:
    """``C4.ome.tif`` -> ``C4``: the name without its image suffix (None: it has none)."""
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None
