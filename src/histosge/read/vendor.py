"""Vendor slide formats (NDPI, MRXS, SCN, VMS, BIF ...) through OpenSlide: the ``openslide``
backend of ``read.image.ImageSource``, the optional extra ``histosge[slides]``
(``openslide-python`` + the ``openslide-bin`` wheel, no system library).

OpenSlide here rather than tiffslide: MRXS and VMS are not TIFF files at all, and OpenSlide's C
readers handle the vendor quirks (NDPI's restart-marker JPEGs, SCN's several images per file).
The pixel size is OpenSlide's ``openslide.mpp-x`` / ``mpp-y``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import InputError
from .pixels import FIX_IMAGE, Backend, pil_rgb

SLIDES_FIX = "pip install 'histosge[slides]' (OpenSlide reads NDPI, MRXS, SCN and other vendor formats)"


class OpenSlideBackend(Backend):
    """One slide opened with OpenSlide."""

    kind = "openslide"

    def __init__(self, path: Path, mpp: float | None = None):
        super().__init__(path, mpp)
        self._slide = None
        self._open()

    def _open(self) -> None:
        try:
            import openslide
        except ImportError:
            raise InputError(f"{self.path.suffix} slides are read with OpenSlide, which is not installed",
                             where=str(self.path), fix=SLIDES_FIX) from None
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except Exception as err:  # OpenSlideUnsupportedFormatError, OpenSlideError, OSError
            raise InputError(f"cannot open slide ({err})", where=str(self.path), fix=FIX_IMAGE) from None
        self.width, self.height = (int(v) for v in self._slide.dimensions)
        self.level_dimensions = [(int(w), int(h)) for w, h in self._slide.level_dimensions]
        if self._mpp_override is None:
            sizes = []
            for key in ("openslide.mpp-x", "openslide.mpp-y"):
                value = self._slide.properties.get(key)
                try:
                    mpp = float(value) if value is not None else None
                except ValueError:
                    mpp = None
                sizes.append(mpp if mpp is not None and math.isfinite(mpp) and mpp > 0 else None)
            self.mpp, self.mpp_y = sizes[0], sizes[1] if sizes[0] is not None else None
            self.mpp_source = "OpenSlide's mpp-x/mpp-y" if self.mpp is not None else None

    @property
    def level_downsamples(self) -> list[float]:
        return [float(d) for d in self._slide.level_downsamples]

    def read(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        try:
            im = self._slide.read_region((round(x0 * ds), round(y0 * ds)), level, (x1 - x0, y1 - y0))
        except Exception as err:
            raise InputError(f"cannot read slide region ({err})", where=str(self.path), fix=FIX_IMAGE) from None
        return np.asarray(pil_rgb(im))  # RGBA, transparent outside the scanned area: onto white

    def close(self) -> None:
        if self._slide is not None:
            self._slide.close()
        self._slide = None

    def __getstate__(self):
        return {**self.__dict__, "_slide": None}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open()
