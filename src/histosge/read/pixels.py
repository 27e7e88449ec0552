"""Pixels as every image backend hands them on: uint8 RGB, white where there is no tissue.

Conversions shared by the backends of ``read.image`` (``read.tiff``, ``read.vendor``,
``read.plain``): any array to uint8 RGB (grey, RGBA, 16-bit, float in [0, 1]), PIL images
composited on white, whole JPEG/PNG decoding with one clear error for a broken file, resizing,
and the check of a pixel size given by hand.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError

# Whole-slide JPEG/PNG exports are far above PIL's decompression-bomb default (~89 Mpx). Allow
# up to 1 Gpx (3 GB decoded) without warning; PIL still refuses above twice that.
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, 1_000_000_000)

FIX_IMAGE = "give a readable, complete H&E image (re-export or re-download it)"


def to_uint8_rgb(arr: np.ndarray, where: str) -> np.ndarray:
    """Bring an image array to uint8 RGB (h, w, 3): grey -> RGB, RGBA -> RGB, float [0,1] -> 0..255."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InputError(
            f"image array has shape {arr.shape}, expected (height, width, 3)", where=where, fix=FIX_IMAGE
        )
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == np.uint16 or (arr.size and arr.max() > 255):
            return (arr.astype(np.float32) / 257.0).round().clip(0, 255).astype(np.uint8)
        return arr.clip(0, 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size == 0:
            return arr.astype(np.uint8)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if not np.isfinite(arr).all() or lo < -1e-3 or hi > 255.0 + 1e-3:
            raise InputError(
                f"image array holds values in [{lo:.3g}, {hi:.3g}], not colours in [0, 1] or [0, 255]",
                where=where,
                fix="store an RGB image (uint8, or float in [0, 1]) or pass the H&E file with --image",
            )
        factor = 255.0 if hi <= 1.0 + 1e-3 else 1.0
        return (arr * factor).round().clip(0, 255).astype(np.uint8)
    raise InputError(f"image array has dtype {arr.dtype}", where=where, fix=FIX_IMAGE)


def is_valid_image_array(arr) -> bool:
    """True when ``arr`` can be shown as an RGB image (used to drop junk ``uns`` images)."""
    try:
        to_uint8_rgb(np.asarray(arr), "array")
    except InputError:
        return False
    return True


def positive_mpp(value, where: str) -> float:
    try:
        mpp = float(value)
    except (TypeError, ValueError):
        mpp = float("nan")
    if not math.isfinite(mpp) or mpp <= 0:
        raise InputError(f"pixel size {value!r} um/px", where=where, fix="give the micrometres per pixel, e.g. mpp=0.5")
    return mpp


def resize(arr: np.ndarray, scale: float) -> np.ndarray:
    """Resize an RGB array by ``scale`` (output size rounded), with PIL antialiasing."""
    h, w = arr.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return np.ascontiguousarray(arr)
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize(size, Image.Resampling.LANCZOS))


def pil_size(path: Path) -> tuple[int, int]:
    """Width and height from the file header, without decoding pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except Image.DecompressionBombError as err:
        raise InputError(str(err), where=str(path), fix="save the slide as a tiled TIFF") from None
    except Exception as err:
        raise InputError(
            f"not a readable image ({type(err).__name__}: {err})", where=str(path), fix=FIX_IMAGE
        ) from None


@contextlib.contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """A truncated or corrupt file read by PIL becomes one ``InputError`` naming it."""
    try:
        yield
    except InputError:
        raise
    except Exception as err:
        raise InputError(f"cannot decode image ({type(err).__name__}: {err})", where=str(path),
                         fix=FIX_IMAGE) from None


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode a whole JPEG/PNG as uint8 RGB; truncated or corrupt files become InputError."""
    path = Path(path)
    with _decoding(path), Image.open(path) as im:
        im.load()
        return np.asarray(pil_rgb(im))


def pil_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im)
        return Image.fromarray(to_uint8_rgb(arr, "image"))
    if im.mode in ("RGBA", "LA", "P", "PA"):
        # composite on white, like glass, rather than dropping alpha to black
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def downsample_file(path: str | os.PathLike, max_side: int = 2000) -> tuple[np.ndarray, float]:
    """A copy of a JPEG/PNG with longest side ``max_side`` and its scale, decoding JPEG at reduced size."""
    path = Path(path)
    with _decoding(path), Image.open(path) as im:
        w, h = im.size
        scale = min(1.0, max_side / max(w, h, 1))
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        im.draft("RGB", size)  # JPEG: decode at 1/2, 1/4 or 1/8 directly (less memory, faster)
        im.load()
        im = pil_rgb(im)
        if im.size != size:
            im = im.resize(size, Image.Resampling.LANCZOS)
        return np.asarray(im), scale


class Backend:
    """What every image backend is (``read.image.ImageSource`` reads through one): ``kind``,
    ``width``, ``height``, ``level_dimensions`` [(w, h)], the pixel size (``mpp``, ``mpp_y``,
    ``mpp_source``, ``mpp_problem``; ``mpp`` given: the file's own is not read), and
    ``read(level, x0, y0, x1, y1)``: uint8 RGB of a region inside the level."""

    kind = ""

    def __init__(self, path: Path | None, mpp: float | None = None):
        self.path = path
        self._mpp_override = mpp
        self.mpp, self.mpp_y, self.mpp_source, self.mpp_problem = mpp, None, None, None

    @property
    def level_downsamples(self) -> list[float]:
        """Level-0 size over each level's size (the mean of x and y, as OpenSlide computes it)."""
        w0, h0 = self.level_dimensions[0]
        return [((w0 / max(w, 1)) + (h0 / max(h, 1))) / 2.0 for w, h in self.level_dimensions]

    def read(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        raise NotImplementedError

    def thumbnail(self, max_side: int) -> tuple[np.ndarray, float] | None:
        """A thumbnail the backend makes better than a pyramid level would; None: it makes none."""
        return None

    def close(self) -> None:
        """Release the file (a pickled copy reopens it)."""
