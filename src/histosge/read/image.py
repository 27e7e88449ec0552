"""Where a section's image lives, and region reads from it without decoding more than needed.

``ImageSource`` is one door to every kind of image, modelled on OpenSlide's API:

- ``width``, ``height``: level-0 (full-resolution) size in pixels;
- ``mpp``: micrometres per level-0 pixel from the file's own metadata, or None when unknown;
- ``level_count``, ``level_dimensions`` [(w, h)], ``level_downsamples`` [float]: the pyramid;
- ``read_region(x0, y0, w, h, *, level=0)``: uint8 RGB ``(h, w, 3)``, coordinates in that
  level's pixels; pixels outside the image come back white (255), like the slide glass, so
  patches at the edge of the tissue look like patches over background instead of failing;
- ``best_level(downsample)``: the coarsest level whose downsample is <= the one wanted.

Behind it, one small backend per kind (``formats`` says which by the file's suffix; ``reader=``
overrides it):

- ``read.tiff``: tiled or pyramidal TIFF / OME-TIFF / SVS through tifffile, only the tiles a
  region touches decoded, through a small cache;
- ``read.vendor``: NDPI, MRXS, SCN, VMS, BIF ... through OpenSlide (``histosge[slides]``);
- ``read.plain``: JPEG / PNG decoded once by PIL, and in-memory arrays (``uns['spatial']``).

``mpp`` comes from an explicit ``ImageSource(path, mpp=...)``, else the backend's reading of the
file's metadata; ``mpp_y`` is the pixel height the same source gives (slides with non-square
pixels are refused by ``read.slide``), ``mpp_source`` where it came from, ``mpp_problem`` why a
size that is there is unusable (zero, an unknown unit), so it is named rather than called missing.

``image_for(adata)`` picks the highest-resolution image a section has and the factor that maps
full-resolution pixel coordinates (``obsm['spatial']``) onto it.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from .. import keys
from ..errors import InputError, broken_link
from .checks import InputWarning
from .formats import backend_for
from .pixels import positive_mpp, resize

__all__ = ["ANISOTROPY_TOLERANCE", "DOWNSAMPLE_SLACK", "READERS", "ImageSource", "image_for", "probe"]

#: What ``ImageSource(..., reader=)`` accepts (None: by suffix, ``formats.backend_for``).
READERS = ("tifffile", "openslide", "pil")
#: Relative slack when comparing downsamples (level sizes are rounded to whole pixels).
DOWNSAMPLE_SLACK = 2e-3
#: Pixels whose height and width differ by more than this (relative) are refused: spots and
#: patches laid in micrometres along x would be stretched along y.
ANISOTROPY_TOLERANCE = 0.01


def _from_backend(name: str, doc: str) -> property:
    return property(lambda self: getattr(self.backend, name), doc=doc)


class ImageSource:
    """Read rectangular regions of an image, at any pyramid level, as uint8 RGB (white outside).

    ``ImageSource(path_or_array, *, where=None, mpp=None, reader=None)``: ``mpp`` overrides the
    pixel size found in the file (micrometres per level-0 pixel), e.g. for a JPEG whose scanner
    is known; ``reader`` ("tifffile", "openslide" or "pil") overrides the choice by file suffix,
    e.g. OpenSlide for a vendor's ``.tif`` that tifffile reads as a plain TIFF. ``backend`` is
    the reader of its kind (``read.tiff``, ``read.vendor``, ``read.plain``).
    """

    def __init__(
        self,
        image: str | os.PathLike | np.ndarray,
        *,
        where: str | None = None,
        mpp: float | None = None,
        reader: str | None = None,
    ):
        override = None if mpp is None else positive_mpp(mpp, "mpp")
        if isinstance(image, np.ndarray):
            from .plain import ArrayBackend

            self.path = None
            self.where = where or "image array"
            self.backend = ArrayBackend(image, self.where)
        else:
            self.path = Path(image)
            self.where = where or str(self.path)
            if not self.path.exists():
                raise InputError(broken_link(self.path) or "image file not found", where=str(self.path),
                                 fix="check the path")
            if self.path.is_dir():
                raise InputError("image path is a folder", where=str(self.path), fix="give the image file")
            if reader not in (None, *READERS):
                raise InputError(f"unknown image reader {reader!r}", where="reader",
                                 fix=f"use one of {', '.join(READERS)}")
            kind = reader or backend_for(self.path.name)
            if kind == "openslide":
                from .vendor import OpenSlideBackend as backend
            elif kind == "tifffile":
                from .tiff import TiffBackend as backend
            else:
                from .plain import PilBackend as backend
            self.backend = backend(self.path, override)
        if override is not None:
            self.backend.mpp = override  # the array backend reads none

    # -- what the backend knows ------------------------------------------------------------------
    kind = _from_backend("kind", "'tiff', 'openslide', 'pil' or 'array': which backend reads it.")
    width = _from_backend("width", "Level-0 width in pixels.")
    height = _from_backend("height", "Level-0 height in pixels.")
    level_dimensions = _from_backend("level_dimensions", "Each level's (width, height).")
    level_downsamples = _from_backend(
        "level_downsamples", "Level-0 size over each level's size (the mean of x and y, as OpenSlide computes it).")
    mpp = _from_backend("mpp", "Micrometres per level-0 pixel (width), or None when unknown.")
    mpp_y = _from_backend("mpp_y", "The pixel height (um) the file gives, when it gives one.")
    mpp_source = _from_backend("mpp_source", "Where ``mpp`` came from (None: given, or unknown).")
    mpp_problem = _from_backend("mpp_problem", "Why the file's metadata gave no pixel size although it holds one.")

    @property
    def array(self) -> np.ndarray | None:
        """The pixels, when they are in memory (an array, or a plain image once decoded)."""
        return getattr(self.backend, "array", None)

    # -- the pyramid ---------------------------------------------------------------------------
    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most ``downsample`` (level 0 below 1).

        Level sizes are whole pixels, so a level within ``DOWNSAMPLE_SLACK`` (0.2%) of the wanted
        downsample counts as equal (a 4.0004x level serves a request for 4x).
        """
        want = float(downsample)
        if not math.isfinite(want):
            raise ValueError(f"downsample {downsample!r} is not a number")
        best = 0
        for level, ds in enumerate(self.level_downsamples):
            if ds <= want * (1.0 + DOWNSAMPLE_SLACK):
                best = level
        return best

    def _check_level(self, level: int) -> int:
        level = int(level)
        if not 0 <= level < self.level_count:
            raise ValueError(f"level {level} of an image with {self.level_count} levels")
        return level

    # -- regions ---------------------------------------------------------------------------------
    def read_region(self, x0: int, y0: int, w: int, h: int, *, level: int = 0) -> np.ndarray:
        """Pixels [y0, y0+h) x [x0, x0+w) of ``level`` (its own pixel coordinates) as uint8 RGB
        ``(h, w, 3)``; outside the image is white."""
        x0, y0, w, h = int(x0), int(y0), int(w), int(h)
        if w < 0 or h < 0:
            raise ValueError(f"negative region size {w}x{h}")
        level = self._check_level(level)
        lw, lh = self.level_dimensions[level]
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        ix0, iy0 = max(x0, 0), max(y0, 0)
        ix1, iy1 = min(x0 + w, lw), min(y0 + h, lh)
        if ix1 <= ix0 or iy1 <= iy0:
            return out
        out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = self.backend.read(level, ix0, iy0, ix1, iy1)
        return out

    def thumbnail(self, max_side: int = 2000) -> tuple[np.ndarray, float]:
        """A downsampled copy (longest side <= max_side) and its scale relative to this image."""
        own = self.backend.thumbnail(max_side)
        if own is not None:
            return own
        scale = min(1.0, max_side / max(self.width, self.height, 1))
        return self._level_thumbnail(scale), scale  # a pyramid level, else strips of level 0

    def _level_thumbnail(self, scale: float) -> np.ndarray:
        target = max(1, round(max(self.width, self.height) * scale))
        # the smallest pyramid level still at least as large as the thumbnail
        for level in range(self.level_count - 1, 0, -1):
            lw, lh = self.level_dimensions[level]
            if max(lw, lh) >= target and lw * lh * 3 <= 512 * 2**20:
                return resize(self.read_region(0, 0, lw, lh, level=level), target / max(lw, lh))
        step = max(1, int(1 / scale))
        strip = max(step, (512 // step) * step)
        rows = [
            self.read_region(0, y, self.width, min(strip, self.height - y))[::step, ::step]
            for y in range(0, self.height, strip)
        ]
        arr = np.concatenate(rows, axis=0)
        return resize(arr, target / max(arr.shape[:2]))

    def close(self) -> None:
        self.backend.close()

    def __repr__(self) -> str:
        levels = f", {self.level_count} levels" if self.level_count > 1 else ""
        mpp = f", {self.mpp:g} um/px" if self.mpp else ""
        return f"ImageSource({self.where!r}, {self.width}x{self.height}, {self.kind}{levels}{mpp})"


def probe(path: str | os.PathLike) -> tuple[int, int]:
    """Width and height of an image file, checking it can be opened (TIFF or PIL formats)."""
    src = ImageSource(path)
    try:
        return src.width, src.height
    finally:
        src.close()


def _library(adata) -> tuple[str, dict]:
    spatial = adata.uns.get(keys.SPATIAL, {})
    lib = keys.info(adata).get("library_id")
    if lib is None or lib not in spatial:
        if len(spatial) != 1:
            raise InputError(
                f"uns['spatial'] holds {len(spatial)} libraries ({', '.join(map(str, spatial)) or 'none'})",
                where="uns['spatial']",
                fix="keep one library per section, or set uns['histosge']['library_id']",
            )
        lib = next(iter(spatial))
    return lib, spatial[lib]


def image_for(adata, image: str | os.PathLike | None = None) -> tuple[ImageSource, float]:
    """The highest-resolution image of a section and the factor from full-res pixels to it.

    Patches are cut from the finest image there is; the factor lets callers keep every
    coordinate in full-resolution pixels whatever image they read.

    Parameters
    ----------
    adata : AnnData
        A section AnnData (``uns['spatial']``).
    image : str or path, optional
        An explicit full-resolution image; wins over what the section references.

    Returns
    -------
    tuple of (ImageSource, float)
        The image, and the scale from full-resolution pixels to its pixels. Order tried:
        ``image`` (scale 1), ``metadata['source_image_path']`` (scale 1; a warning when the file
        is gone), the 'hires' image, then 'lowres' (their ``tissue_*_scalef``).

    Raises
    ------
    InputError
        No image at all, several libraries without ``uns['histosge']['library_id']``, or a
        stored image without its scale factor.
    """
    if image is not None:
        return ImageSource(image), 1.0
    if not adata.uns.get(keys.SPATIAL):
        raise InputError(
            "the section has no image (uns['spatial'] is empty)",
            where="uns['spatial']",
            fix="pass the full-resolution H&E with --image",
        )
    lib, entry = _library(adata)
    path = entry.get("metadata", {}).get("source_image_path")
    if path:
        if Path(path).exists():
            return ImageSource(path), 1.0
        warnings.warn(
            f"{path}: source image not found; using the stored images instead", InputWarning, stacklevel=2
        )
    images = entry.get("images", {})
    factors = entry.get("scalefactors", {})
    for key in ("hires", "lowres"):
        if key in images:
            scale = factors.get(f"tissue_{key}_scalef")
            if scale is None:
                raise InputError(
                    f"image '{key}' has no tissue_{key}_scalef",
                    where=f"uns['spatial']['{lib}']['scalefactors']",
                    fix="add the scale factor from scalefactors_json.json",
                )
            return ImageSource(
                np.asarray(images[key]), where=f"uns['spatial']['{lib}']['images']['{key}']"
            ), float(scale)
    raise InputError(
        "the section has no image",
        where=f"uns['spatial']['{lib}']",
        fix="pass the full-resolution H&E with --image",
    )
