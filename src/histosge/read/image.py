"""Where a section's image lives, and region reads from it without decoding more than needed.

``ImageSource`` hides three kinds of image behind ``width``, ``height`` and
``read_region(x0, y0, w, h)``:

- tiled or pyramidal TIFF / OME-TIFF / SVS: read through tifffile's zarr view, so only the
  tiles a region touches are decoded (a 20k x 20k slide is never held whole);
- JPEG / PNG / plain images: PIL cannot decode part of a JPEG, so the first region read decodes
  the image once and keeps it (about 3 bytes per pixel);
- an in-memory array (an ``uns['spatial']`` image): used as it is.

Pixels outside the image come back white (255), like the slide glass, so patches at the edge of
the tissue look like patches over background instead of failing.

``image_for(adata)`` picks the highest-resolution image a section has and the factor that maps
full-resolution pixel coordinates (``obsm['spatial']``) onto it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from .checks import InputWarning

# Whole-slide JPEG/PNG exports are far above PIL's decompression-bomb default (~89 Mpx). Allow
# up to 1 Gpx (3 GB decoded) without warning; PIL still refuses above twice that.
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, 1_000_000_000)

TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ome.tif", ".ome.tiff", ".ndpi", ".scn", ".btf")
_FIX_IMAGE = "give a readable, complete H&E image (re-export or re-download it)"


def _to_uint8_rgb(arr: np.ndarray, where: str) -> np.ndarray:
    """Bring an image array to uint8 RGB (h, w, 3): grey -> RGB, RGBA -> RGB, float [0,1] -> 0..255."""
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InputError(
            f"image array has shape {arr.shape}, expected (height, width, 3)", where=where, fix=_FIX_IMAGE
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
    raise InputError(f"image array has dtype {arr.dtype}", where=where, fix=_FIX_IMAGE)


def is_valid_image_array(arr) -> bool:
    """True when ``arr`` can be shown as an RGB image (used to drop junk ``uns`` images)."""
    try:
        _to_uint8_rgb(np.asarray(arr), "array")
    except InputError:
        return False
    return True


class ImageSource:
    """Read rectangular regions of an image as uint8 RGB, padding outside it with white."""

    def __init__(self, image: str | os.PathLike | np.ndarray, *, where: str | None = None):
        self._array: np.ndarray | None = None
        self._zarr = None
        self._tiff = None
        if isinstance(image, np.ndarray):
            self.path = None
            self.kind = "array"
            self.where = where or "image array"
            self._array = _to_uint8_rgb(image, self.where)
            self.height, self.width = self._array.shape[:2]
            return
        self.path = Path(image)
        self.where = where or str(self.path)
        if not self.path.exists():
            raise InputError("image file not found", where=str(self.path), fix="check the path")
        if self.path.is_dir():
            raise InputError("image path is a folder", where=str(self.path), fix="give the image file")
        if self.path.name.lower().endswith(TIFF_SUFFIXES):
            self.kind = "tiff"
            self._open_tiff()
        else:
            self.kind = "pil"
            self.width, self.height = _pil_size(self.path)

    # -- TIFF through zarr: only the tiles a region touches are decoded -------------------------
    def _open_tiff(self) -> None:
        import tifffile
        import zarr

        try:
            self._tiff = tifffile.TiffFile(self.path)
            series = self._tiff.series[0]
            axes = series.levels[0].axes if series.levels else series.axes
            store = series.aszarr(level=0)
            self._zarr = zarr.open(store, mode="r")
            if not hasattr(self._zarr, "shape"):  # a group: take level 0
                self._zarr = self._zarr["0"]
        except InputError:
            raise
        except Exception as err:  # tifffile raises many types for broken files
            self.close()
            raise InputError(f"cannot read TIFF ({err})", where=str(self.path), fix=_FIX_IMAGE) from None
        self._axes = axes.upper()
        if len(self._axes) != len(self._zarr.shape) or "Y" not in self._axes or "X" not in self._axes:
            shape = self._zarr.shape
            self.close()
            raise InputError(
                f"TIFF axes {axes} do not fit shape {shape}", where=str(self.path), fix=_FIX_IMAGE
            )
        shape = self._zarr.shape
        self.height, self.width = int(shape[self._axes.index("Y")]), int(shape[self._axes.index("X")])

    def _read_tiff(self, x0: int, y0: int, x1: int, y1: int, z=None, axes: str | None = None) -> np.ndarray:
        """Region of a zarr view (level 0 unless ``z``/``axes`` name another) as uint8 RGB."""
        z = self._zarr if z is None else z
        axes = self._axes if axes is None else axes
        colour = next((c for c in "SC" if c in axes), None)
        index = tuple(
            slice(y0, y1) if ax == "Y" else slice(x0, x1) if ax == "X" else slice(None) if ax == colour else 0
            for ax in axes
        )
        try:
            block = np.asarray(z[index])
        except Exception as err:
            msg = str(err)
            fix = _FIX_IMAGE
            if "imagecodecs" in msg or "codec" in msg.lower():
                fix = "pip install imagecodecs (needed for JPEG/JPEG2000-compressed TIFF/SVS)"
            raise InputError(f"cannot decode TIFF region ({msg})", where=str(self.path), fix=fix) from None
        kept = [ax for ax in axes if ax in ("Y", "X", colour)]
        order = [kept.index("Y"), kept.index("X")] + ([kept.index(colour)] if colour else [])
        return _to_uint8_rgb(np.transpose(block, order), str(self.path))

    # -- JPEG/PNG through PIL: decoded once, then sliced ----------------------------------------
    def _load_pil(self) -> np.ndarray:
        if self._array is None:
            self._array = load_rgb(self.path)
            if self._array.shape[:2] != (self.height, self.width):
                raise InputError("image size changed while reading", where=str(self.path), fix=_FIX_IMAGE)
        return self._array

    def read_region(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """Pixels [y0, y0+h) x [x0, x0+w) as uint8 RGB (h, w, 3); outside the image is white."""
        x0, y0, w, h = int(x0), int(y0), int(w), int(h)
        if w < 0 or h < 0:
            raise ValueError(f"negative region size {w}x{h}")
        out = np.full((h, w, 3), 255, dtype=np.uint8)
        ix0, iy0 = max(x0, 0), max(y0, 0)
        ix1, iy1 = min(x0 + w, self.width), min(y0 + h, self.height)
        if ix1 <= ix0 or iy1 <= iy0:
            return out
        if self.kind == "tiff":
            block = self._read_tiff(ix0, iy0, ix1, iy1)
        else:
            arr = self._array if self.kind == "array" else self._load_pil()
            block = arr[iy0:iy1, ix0:ix1]
        out[iy0 - y0 : iy1 - y0, ix0 - x0 : ix1 - x0] = block
        return out

    def thumbnail(self, max_side: int = 2000) -> tuple[np.ndarray, float]:
        """A downsampled copy (longest side <= max_side) and its scale relative to this image."""
        scale = min(1.0, max_side / max(self.width, self.height, 1))
        if self.kind == "pil":
            return downsample_file(self.path, max_side)
        if self.kind == "array":
            arr = self._array
            return _resize(arr, scale), scale
        return self._tiff_thumbnail(scale), scale  # TIFF: a pyramid level, else strips

    def _tiff_thumbnail(self, scale: float) -> np.ndarray:
        import zarr

        target = max(1, round(max(self.width, self.height) * scale))
        series = self._tiff.series[0]
        # the smallest pyramid level still at least as large as the thumbnail
        for level in range(len(series.levels) - 1, 0, -1):
            lv = series.levels[level]
            axes = lv.axes.upper()
            lw, lh = lv.shape[axes.index("X")], lv.shape[axes.index("Y")]
            if max(lw, lh) >= target and lw * lh * 3 <= 512 * 2**20:
                z = zarr.open(series.aszarr(level=level), mode="r")
                return _resize(self._read_tiff(0, 0, lw, lh, z=z, axes=axes), target / max(lw, lh))
        step = max(1, int(1 / scale))
        strip = max(step, (512 // step) * step)
        rows = [
            self.read_region(0, y, self.width, min(strip, self.height - y))[::step, ::step]
            for y in range(0, self.height, strip)
        ]
        arr = np.concatenate(rows, axis=0)
        return _resize(arr, target / max(arr.shape[:2]))

    def close(self) -> None:
        if self._tiff is not None:
            self._tiff.close()
        self._tiff = None
        self._zarr = None

    # DataLoader workers pickle the source: send the path, reopen on the other side.
    def __getstate__(self):
        state = self.__dict__.copy()
        if self.kind != "array":
            state["_array"] = None
        state["_tiff"] = None
        state["_zarr"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.kind == "tiff":
            self._open_tiff()

    def __repr__(self) -> str:
        return f"ImageSource({self.where!r}, {self.width}x{self.height}, {self.kind})"


def _resize(arr: np.ndarray, scale: float) -> np.ndarray:
    """Resize an RGB array by ``scale`` (output size rounded), with PIL antialiasing."""
    h, w = arr.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return np.ascontiguousarray(arr)
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize(size, Image.Resampling.LANCZOS))


def _pil_size(path: Path) -> tuple[int, int]:
    """Width and height from the file header, without decoding pixels."""
    try:
        with Image.open(path) as im:
            return im.size
    except Image.DecompressionBombError as err:
        raise InputError(str(err), where=str(path), fix="save the slide as a tiled TIFF") from None
    except Exception as err:
        raise InputError(
            f"not a readable image ({type(err).__name__}: {err})", where=str(path), fix=_FIX_IMAGE
        ) from None


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode a whole JPEG/PNG as uint8 RGB; truncated or corrupt files become InputError."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(_pil_rgb(im))
    except InputError:
        raise
    except Exception as err:
        raise InputError(
            f"cannot decode image ({type(err).__name__}: {err})", where=str(path), fix=_FIX_IMAGE
        ) from None


def _pil_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im)
        return Image.fromarray(_to_uint8_rgb(arr, "image"))
    if im.mode in ("RGBA", "LA", "P", "PA"):
        # composite on white, like glass, rather than dropping alpha to black
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def downsample_file(path: str | os.PathLike, max_side: int = 2000) -> tuple[np.ndarray, float]:
    """A copy of a JPEG/PNG with longest side ``max_side`` and its scale, decoding JPEG at reduced size."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            scale = min(1.0, max_side / max(w, h, 1))
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            im.draft("RGB", size)  # JPEG: decode at 1/2, 1/4 or 1/8 directly (less memory, faster)
            im.load()
            im = _pil_rgb(im)
            if im.size != size:
                im = im.resize(size, Image.Resampling.LANCZOS)
            return np.asarray(im), scale
    except InputError:
        raise
    except Exception as err:
        raise InputError(
            f"cannot decode image ({type(err).__name__}: {err})", where=str(path), fix=_FIX_IMAGE
        ) from None


def probe(path: str | os.PathLike) -> tuple[int, int]:
    """Width and height of an image file, checking it can be opened (TIFF or PIL formats)."""
    src = ImageSource(path)
    try:
        return src.width, src.height
    finally:
        src.close()


def _library(adata) -> tuple[str, dict]:
    spatial = adata.uns.get("spatial", {})
    lib = adata.uns.get("histosge", {}).get("library_id")
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

    Order: an explicit ``image`` path (full resolution, scale 1), then
    ``metadata['source_image_path']``, then the 'hires' image, then 'lowres'.
    """
    if image is not None:
        return ImageSource(image), 1.0
    if not adata.uns.get("spatial"):
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
