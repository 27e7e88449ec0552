"""Where a section's image lives, and region reads from it without decoding more than needed.

``ImageSource`` hides four kinds of image behind one API, modelled on OpenSlide's:

- ``width``, ``height``: level-0 (full-resolution) size in pixels;
- ``mpp``: micrometres per level-0 pixel from the file's own metadata, or None when unknown;
- ``level_count``, ``level_dimensions`` [(w, h)], ``level_downsamples`` [float]: the pyramid;
- ``read_region(x0, y0, w, h, *, level=0)``: uint8 RGB ``(h, w, 3)``, coordinates in that
  level's pixels; pixels outside the image come back white (255), like the slide glass, so
  patches at the edge of the tissue look like patches over background instead of failing;
- ``best_level(downsample)``: the coarsest level whose downsample is <= the one wanted.

The kinds:

- tiled or pyramidal TIFF / OME-TIFF / SVS, through tifffile: only the tiles (or strips) a
  region touches are decoded, each at most once while it stays in a small shared cache of
  decoded tiles (``TILE_CACHE_BYTES``), so neighbouring patches never decode a tile twice and
  a 40k x 40k slide is never held whole;
- vendor formats (NDPI, MRXS, SCN, VMS, BIF, ...) through OpenSlide, the optional extra
  ``histosge[slides]`` (``openslide-python`` + the ``openslide-bin`` wheel, no system library).
  OpenSlide rather than tiffslide: MRXS and VMS are not TIFF files at all, and OpenSlide's C
  readers handle the vendor quirks (NDPI's restart-marker JPEGs, SCN's several images per
  file); for the TIFF family tifffile already does what tiffslide would, without another
  dependency;
- JPEG / PNG / plain images: PIL cannot decode part of a JPEG, so the first region read decodes
  the image once and keeps it (about 3 bytes per pixel); one level, ``mpp`` None (their DPI
  fields are software defaults, not a measurement);
- an in-memory array (an ``uns['spatial']`` image): used as it is; one level.

``mpp`` comes from, in this order: an explicit ``ImageSource(path, mpp=...)``; OME-XML
``PhysicalSizeX`` (with its unit, any OME length unit); an Aperio SVS description's ``MPP = x``;
OpenSlide's ``openslide.mpp-x``; the TIFF ``XResolution`` / ``ResolutionUnit`` tags (inch or
centimetre) when they give 0.01-20 um/px (72-600 dpi, the defaults image software writes, give
42-353 um/px and are ignored). ``mpp_y`` is the pixel height the same source gives (slides with
non-square pixels are refused by ``read.slide``), ``mpp_problem`` why a size that is there is
unusable (zero, an unknown unit), so it is named rather than called missing.

TIFF samples become RGB as what they are: CMYK is converted, integer samples are scaled by the
image's white (12-bit data in 16-bit samples: 4095), empty (0-byte) tiles are glass, and an image
with no colour to read (greyscale, MinIsWhite, palette, Lab) is refused naming its
PhotometricInterpretation; a file cut short is refused as truncated.

``image_for(adata)`` picks the highest-resolution image a section has and the factor that maps
full-resolution pixel coordinates (``obsm['spatial']``) onto it.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from .. import keys
from ..errors import InputError, broken_link
from .checks import InputWarning

# Whole-slide JPEG/PNG exports are far above PIL's decompression-bomb default (~89 Mpx). Allow
# up to 1 Gpx (3 GB decoded) without warning; PIL still refuses above twice that.
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, 1_000_000_000)

TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ome.tif", ".ome.tiff", ".btf", ".tf8", ".qptiff")
#: Read through OpenSlide (``pip install 'histosge[slides]'``).
SLIDE_SUFFIXES = (".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
#: What ``ImageSource(..., reader=)`` accepts (None: by suffix).
READERS = ("tifffile", "openslide", "pil")
#: Decoded tiles kept per image (bytes), shared by all levels: a band of tiles across a slide.
TILE_CACHE_BYTES = 64 * 2**20
#: Resolution tags outside this range (um per pixel) are software defaults, not measurements.
MPP_FROM_TAGS_RANGE = (0.01, 20.0)
#: Relative slack when comparing downsamples (level sizes are rounded to whole pixels).
DOWNSAMPLE_SLACK = 2e-3
_FIX_IMAGE = "give a readable, complete H&E image (re-export or re-download it)"
_SLIDES_FIX = "pip install 'histosge[slides]' (OpenSlide reads NDPI, MRXS, SCN and other vendor formats)"
#: OME ``UnitsLength`` (and common spellings) in micrometres.
_UNIT_UM = {
    "m": 1e6, "dm": 1e5, "cm": 1e4, "mm": 1e3, "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "micrometer": 1.0,
    "nm": 1e-3, "pm": 1e-6, "å": 1e-4, "angstrom": 1e-4, "in": 25400.0, "inch": 25400.0, "thou": 25.4,
    "mil": 25.4, "li": 2116.67, "pt": 25400.0 / 72, "ft": 304800.0, "yd": 914400.0,
}
#: Pixels whose height and width differ by more than this (relative) are refused: spots and
#: patches laid in micrometres along x would be stretched along y.
ANISOTROPY_TOLERANCE = 0.01


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


def _positive_mpp(value, where: str) -> float:
    try:
        mpp = float(value)
    except (TypeError, ValueError):
        mpp = float("nan")
    if not math.isfinite(mpp) or mpp <= 0:
        raise InputError(f"pixel size {value!r} um/px", where=where, fix="give the micrometres per pixel, e.g. mpp=0.5")
    return mpp


def _mpp_from_ome(xml: str | None) -> tuple[float | None, float | None, str | None]:
    """(``PhysicalSizeX``, ``PhysicalSizeY``, what is wrong with them) of the first image in
    OME-XML, in micrometres (unit default: um); a size that is there but unusable (zero, not a
    number, an unknown or non-length unit) is None with the reason, never read as absent."""
    if not xml:
        return None, None, None
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        return None, None, f"its OME-XML cannot be parsed ({err})"
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] != "Pixels":
            continue
        sizes, problems = [], []
        for axis in "XY":
            raw, unit = el.get(f"PhysicalSize{axis}"), (el.get(f"PhysicalSize{axis}Unit") or "µm").strip()
            if raw is None:
                sizes.append(None)
                continue
            factor = _UNIT_UM.get(unit.lower())
            try:
                value = float(raw)
            except ValueError:
                value = float("nan")
            if factor is None:
                problems.append(f'PhysicalSize{axis}Unit="{unit}" is not a length unit histosge knows')
            elif not (math.isfinite(value) and value > 0):
                problems.append(f'PhysicalSize{axis}="{raw}" is not a pixel size')
            sizes.append(value * factor if factor and math.isfinite(value) and value > 0 else None)
        return sizes[0], sizes[1], "; ".join(problems) or None
    return None, None, None


def _mpp_from_svs(description: str | None) -> float | None:
    """``MPP = x`` of an Aperio ImageDescription (``...|AppMag = 20|MPP = 0.4990|...``)."""
    m = re.search(r"(?:^|\|)\s*MPP\s*=\s*([0-9.eE+-]+)", description or "")
    if not m:
        return None
    try:
        value = float(m.group(1))
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def _mpp_from_tags(page) -> tuple[float | None, float | None]:
    """(x, y) from XResolution / YResolution / ResolutionUnit (inch or centimetre), each within
    ``MPP_FROM_TAGS_RANGE``."""
    tags = page.tags
    unit = tags.get("ResolutionUnit")
    try:
        um_per_unit = {2: 25400.0, 3: 10000.0}.get(int(unit.value)) if unit is not None else None
    except (TypeError, ValueError):
        um_per_unit = None
    if not um_per_unit:
        return None, None
    out = []
    for name in ("XResolution", "YResolution"):
        res = tags.get(name)
        try:
            num, den = res.value
            per_unit = num / den
        except (AttributeError, TypeError, ValueError, ZeroDivisionError):
            per_unit = 0
        mpp = um_per_unit / per_unit if per_unit and per_unit > 0 else None
        lo, hi = MPP_FROM_TAGS_RANGE
        out.append(mpp if mpp is not None and lo <= mpp <= hi else None)
    return out[0], out[1] if out[0] is not None else None


class _Said(logging.Handler):
    """What tifffile logged while a file was opened (checked for truncation, never printed)."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record) -> None:
        self.lines.append(record.getMessage())


def _glass(dtype) -> float:
    """The sample value of white glass in ``dtype`` (what an empty tile stands for)."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


class _TileCache:
    """Decoded tiles, least recently used dropped first once ``max_bytes`` is exceeded; thread-safe."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.decoded = 0  # tiles decoded so far (what the cache saves is visible in tests)

    def get(self, key):
        with self._lock:
            arr = self._items.get(key)
            if arr is not None:
                self._items.move_to_end(key)
            return arr

    def put(self, key, arr: np.ndarray) -> None:
        with self._lock:
            self.decoded += 1
            if key in self._items or arr.nbytes > self.max_bytes:
                return
            self._items[key] = arr
            self._bytes += arr.nbytes
            while self._bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __getstate__(self):  # a copy starts empty (what DataLoader workers get)
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state):
        self.__init__(state["max_bytes"])


class _TiffLevel:
    """One pyramid level of a TIFF: its size, and either direct tile access or a zarr view.

    Direct access (tifffile's own segment decoder on bytes read with ``os.pread``, so threads
    can share it) covers what slides are: one page, Y-X(-samples), interleaved, uint8/uint16,
    tiled or stripped. Anything else (planar, stacks, other dtypes) goes through tifffile's zarr
    store, which decodes what a region touches without a tile cache.
    """

    def __init__(self, tiff, series, index: int):
        level = series.levels[index] if series.levels else series
        self.index = index
        self.axes = level.axes.upper()
        shape = level.shape
        if "Y" not in self.axes or "X" not in self.axes or len(self.axes) != len(shape):
            raise ValueError(f"TIFF axes {level.axes} do not fit shape {shape}")
        self.width, self.height = int(shape[self.axes.index("X")]), int(shape[self.axes.index("Y")])
        page = level.keyframe
        pages = getattr(level, "pages", [page])
        self.page, self.pages, self.shape = page, [p for p in pages if p is not None], tuple(shape)
        self.fillvalue: float | None = None  # what an empty tile reads as through zarr (glass)
        self.direct = (
            len(pages) == 1
            and self.axes in ("YXS", "YX")
            and page.dtype in (np.uint8, np.uint16)
            and (page.samplesperpixel == 1 or page.planarconfig == 1)
            and page.imagedepth == 1
            and len(page.dataoffsets) > 0
        )
        if self.direct:
            if page.is_tiled:
                self.seg_w, self.seg_h = int(page.tilewidth), int(page.tilelength)
            else:
                self.seg_w, self.seg_h = self.width, int(page.rowsperstrip or self.height)
            self.n_cols = -(-self.width // self.seg_w)
            self.n_rows = -(-self.height // self.seg_h)
            if self.n_cols * self.n_rows != len(page.dataoffsets):
                self.direct = False
        self._series, self._zarr = series, None

    def zarr(self):
        if self._zarr is None:
            import zarr

            z = zarr.open(self._series.aszarr(level=self.index, fillvalue=self.fillvalue), mode="r")
            self._zarr = z if hasattr(z, "shape") else z[str(self.index)]
        return self._zarr


class ImageSource:
    """Read rectangular regions of an image, at any pyramid level, as uint8 RGB (white outside).

    ``ImageSource(path_or_array, *, where=None, mpp=None, reader=None)``: ``mpp`` overrides the
    pixel size found in the file (micrometres per level-0 pixel), e.g. for a JPEG whose scanner
    is known; ``reader`` ("tifffile", "openslide" or "pil") overrides the choice by file suffix,
    e.g. OpenSlide for a vendor's ``.tif`` that tifffile reads as a plain TIFF.
    """

    def __init__(
        self,
        image: str | os.PathLike | np.ndarray,
        *,
        where: str | None = None,
        mpp: float | None = None,
        reader: str | None = None,
    ):
        self._array: np.ndarray | None = None
        self._tiff = None
        self._slide = None
        self._fd: int | None = None
        self._levels: list[_TiffLevel] = []
        self._tiles = _TileCache(TILE_CACHE_BYTES)
        self._mpp_override = None if mpp is None else _positive_mpp(mpp, "mpp")
        self.mpp: float | None = self._mpp_override
        #: the pixel height (um) the file gives, when it gives one; ``mpp`` is the width
        self.mpp_y: float | None = None
        #: where ``mpp`` came from (None: given, or unknown), and why metadata gave none
        self.mpp_source: str | None = None
        self.mpp_problem: str | None = None
        #: integer samples are scaled by 255 / white (12-bit data in 16-bit samples: 4095)
        self._white: float | None = None
        self._cmyk = False
        if isinstance(image, np.ndarray):
            self.path = None
            self.kind = "array"
            self.where = where or "image array"
            self._array = _to_uint8_rgb(image, self.where)
            self.height, self.width = self._array.shape[:2]
            self.level_dimensions = [(self.width, self.height)]
            return
        self.path = Path(image)
        self.where = where or str(self.path)
        if not self.path.exists():
            raise InputError(broken_link(self.path) or "image file not found", where=str(self.path),
                             fix="check the path")
        if self.path.is_dir():
            raise InputError("image path is a folder", where=str(self.path), fix="give the image file")
        name = self.path.name.lower()
        if reader not in (None, *READERS):
            raise InputError(f"unknown image reader {reader!r}", where="reader", fix=f"use one of {', '.join(READERS)}")
        if reader == "openslide" or (reader is None and name.endswith(SLIDE_SUFFIXES)):
            self.kind = "openslide"
            self._open_slide()
        elif reader == "tifffile" or (reader is None and name.endswith(TIFF_SUFFIXES)):
            self.kind = "tiff"
            self._open_tiff()
        else:
            self.kind = "pil"
            self.width, self.height = _pil_size(self.path)
            self.level_dimensions = [(self.width, self.height)]

    # -- the pyramid ---------------------------------------------------------------------------
    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def level_downsamples(self) -> list[float]:
        """Level-0 size over each level's size (the mean of x and y, as OpenSlide computes it)."""
        if self.kind == "openslide":
            return [float(d) for d in self._slide.level_downsamples]
        w0, h0 = self.level_dimensions[0]
        return [((w0 / max(w, 1)) + (h0 / max(h, 1))) / 2.0 for w, h in self.level_dimensions]

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

    # -- TIFF: tiles decoded by tifffile, kept in a small cache --------------------------------
    def _open_tiff(self) -> None:
        import tifffile

        log, said = logging.getLogger("tifffile"), _Said()
        log.addHandler(said)
        propagate, log.propagate = log.propagate, False  # tifffile's own lines would stray onto stderr
        try:
            self._tiff = tifffile.TiffFile(self.path)
            series = self._tiff.series[0]
            n_levels = max(1, len(series.levels))
            self._levels = [_TiffLevel(self._tiff, series, i) for i in range(n_levels)]
            self._check_complete(said.lines)
            if any(lv.direct for lv in self._levels):
                self._fd = os.open(self.path, os.O_RDONLY)
            first_open = not getattr(self, "_checked", False)
            if first_open:
                self._check_colour()
                self._checked = True
            for lv in self._levels:
                lv.fillvalue = 0 if self._cmyk else _glass(lv.page.dtype)
            if self._mpp_override is None:
                self._pixel_size_from_tiff(series)
        except InputError:
            self.close()
            raise
        except Exception as err:  # tifffile raises many types for broken files
            self.close()
            raise InputError(f"cannot read TIFF ({err})", where=str(self.path), fix=_FIX_IMAGE) from None
        finally:
            log.removeHandler(said)
            log.propagate = propagate
        if first_open:
            self._warn_empty_tiles()
        base = self._levels[0]
        self.width, self.height = base.width, base.height
        self.level_dimensions = [(lv.width, lv.height) for lv in self._levels]

    def _check_complete(self, said: list[str]) -> None:
        """A file cut short is refused as that, not read as one without metadata or with holes:
        image data past the end of the file, or tags tifffile found pointing past it."""
        size = os.path.getsize(self.path)
        end = 0
        for lv in self._levels:
            for page in lv.pages:
                offsets = np.asarray(getattr(page, "dataoffsets", ()), np.int64)
                counts = np.asarray(getattr(page, "databytecounts", ()), np.int64)
                if len(offsets) == len(counts) and len(counts):
                    end = max(end, int((offsets + counts)[counts > 0].max(initial=0)))
        if end > size:
            raise InputError(f"the TIFF file is truncated: it is {size:,} bytes and its image data runs to byte "
                             f"{end:,}", where=str(self.path), fix=_FIX_IMAGE)
        broken = [line for line in said if re.search(r"invalid value offset|corrupted|truncated|beyond", line, re.I)]
        if broken:
            m = re.search(r"TiffTag (\d+)\b.*invalid value offset (\d+)", broken[0])
            why = (f"tag {m[1]}'s values at byte {int(m[2]):,} run past the end of the {size:,}-byte file" if m
                   else re.sub(r"<[^>]*>\s*", "", broken[0]).strip()[:200])
            raise InputError(f"the TIFF file is truncated or damaged ({why})", where=str(self.path), fix=_FIX_IMAGE)

    def _check_colour(self) -> None:
        """H&E is read as RGB: CMYK is converted, integer samples are scaled by their real white
        (12-bit data in 16-bit samples: 4095), and what has no colour to read (greyscale,
        MinIsWhite, palette, Lab ...) is refused in one line naming the property."""
        import tifffile

        lv = self._levels[0]
        page = lv.page
        channels = next((lv.shape[lv.axes.index(a)] for a in "SC" if a in lv.axes), 1)
        try:
            name = tifffile.PHOTOMETRIC(page.photometric).name
        except ValueError:
            name = str(page.photometric)
        photometric = {"MINISBLACK": "MinIsBlack", "MINISWHITE": "MinIsWhite", "SEPARATED": "Separated (CMYK)",
                       "PALETTE": "Palette"}.get(name, name)
        fix = "give the slide's colour (RGB) scan, or convert it to an RGB TIFF"
        if name in ("MINISBLACK", "MINISWHITE") and channels < 3:
            raise InputError(f"a greyscale image (PhotometricInterpretation {photometric}, {channels} sample per "
                             "pixel): it holds no H&E colour to read", where=str(self.path), fix=fix)
        if name == "SEPARATED":
            inkset = page.tags.get("InkSet")
            if channels < 4 or (inkset is not None and int(inkset.value) != 1):
                raise InputError(f"separated colour with {channels} inks (PhotometricInterpretation Separated, "
                                 "not CMYK): it cannot be read as RGB", where=str(self.path), fix=fix)
            self._cmyk = True
        elif name not in ("RGB", "YCBCR", "MINISBLACK"):
            raise InputError(f"PhotometricInterpretation {photometric}: histosge reads RGB (and converts CMYK)",
                             where=str(self.path), fix=fix)
        dtype = np.dtype(page.dtype)
        if dtype.kind in "ui" and dtype.itemsize > 1:
            self._white = self._white_level(lv, dtype)

    def _white_level(self, lv: _TiffLevel, dtype: np.dtype) -> float:
        """The sample value of white: the MaxSampleValue tag, else BitsPerSample below the sample
        size, else the smallest 2^bits - 1 (8, 10, 12, 14 or 16 bits) above the brightest
        sample of the coarsest level (glass is near white on every H&E slide)."""
        top = float(np.iinfo(dtype).max)
        tag = lv.page.tags.get("MaxSampleValue")
        if tag is not None:
            value = float(np.max(np.atleast_1d(tag.value)))
            if 0 < value < top:
                return value
        bits = int(lv.page.bitspersample)
        if bits < 8 * dtype.itemsize:
            white = float(2**bits - 1)
        else:
            brightest = self._brightest(self._levels[-1])
            white = next((float(2**b - 1) for b in (8, 10, 12, 14, 16) if brightest <= 2**b - 1), top)
        if white < top:
            warnings.warn(f"{self.path}: {dtype.itemsize * 8}-bit samples that reach at most {white:g} "
                          f"({int(np.log2(white + 1))}-bit data); read with {white:g} as white", InputWarning,
                          stacklevel=4)
        return white

    def _brightest(self, lv: _TiffLevel) -> float:
        """The largest sample in up to 64 tiles spread over a level (raw values, not converted)."""
        if lv.direct:
            n = lv.n_rows * lv.n_cols
            best = 0.0
            for index in np.unique(np.linspace(0, n - 1, min(n, 64)).astype(int)):
                seg = self._raw_segment(lv, int(index))
                if seg is not None and seg.size:
                    best = max(best, float(seg.max()))
            return best
        step_y, step_x = max(1, lv.height // 8), max(1, lv.width // 8)
        return max(float(np.max(self._zarr_block(lv, x, y, min(x + 256, lv.width), min(y + 256, lv.height))))
                   for y in range(0, lv.height, step_y) for x in range(0, lv.width, step_x))

    def _warn_empty_tiles(self) -> None:
        lv = self._levels[0]
        counts = np.asarray(getattr(lv.page, "databytecounts", ()), np.int64)
        empty = int((counts == 0).sum())
        if empty:
            warnings.warn(f"{self.path}: {empty} of {len(counts)} tiles at full resolution are empty (0 bytes); read "
                          "as glass (white), as a sparse TIFF's skipped background", InputWarning, stacklevel=4)

    def _pixel_size_from_tiff(self, series) -> None:
        """``mpp`` and ``mpp_y`` from OME-XML, else an SVS description, else the resolution tags;
        ``mpp_source`` names where they came from, ``mpp_problem`` why metadata that is there
        gives none."""
        x, y, problem = _mpp_from_ome(self._tiff.ome_metadata if self._tiff.is_ome else None)
        source = "OME PhysicalSizeX/PhysicalSizeY"
        if x is None and problem is None and self._tiff.is_svs:
            x = _mpp_from_svs(self._tiff.pages[0].description)
            y, source = x, "the SVS description's MPP"
        if x is None and problem is None:
            x, y = _mpp_from_tags(series.levels[0].keyframe if series.levels else series.keyframe)
            source = "the TIFF tags XResolution/YResolution"
        self.mpp, self.mpp_y, self.mpp_problem = x, (y if x is not None else None), problem
        self.mpp_source = source if x is not None else None

    def _decode_error(self, err: Exception) -> InputError:
        msg = str(err)
        fix = _FIX_IMAGE
        if "imagecodecs" in msg or "codec" in msg.lower():
            fix = "pip install imagecodecs (needed for JPEG/JPEG2000-compressed TIFF/SVS)"
        return InputError(f"cannot decode TIFF region ({msg})", where=str(self.path), fix=fix)

    def _tile(self, lv: _TiffLevel, index: int) -> np.ndarray:
        """Segment ``index`` of level ``lv`` as uint8 RGB, cropped to the image (from the cache)."""
        key = (lv.index, index)
        tile = self._tiles.get(key)
        if tile is not None:
            return tile
        row, col = divmod(index, lv.n_cols)
        h = min(lv.seg_h, lv.height - row * lv.seg_h)
        w = min(lv.seg_w, lv.width - col * lv.seg_w)
        seg = self._raw_segment(lv, index)
        if seg is None:  # an empty (sparse) tile: glass
            tile = np.full((h, w, 3), 255, np.uint8)
        else:
            tile = self._to_rgb(seg[:h, :w])
        tile = np.ascontiguousarray(tile)
        tile.flags.writeable = False
        self._tiles.put(key, tile)
        return tile

    def _raw_segment(self, lv: _TiffLevel, index: int) -> np.ndarray | None:
        """Segment ``index`` of a direct level as stored, (h, w, samples); None for an empty tile."""
        page = lv.page
        try:
            count = int(page.databytecounts[index])
            data = os.pread(self._fd, count, int(page.dataoffsets[index])) if count else None
            if count and len(data) != count:
                raise ValueError(f"file ends inside tile {index}")
            if data is None:
                return None
            seg, _, _ = page.decode(data, index, jpegtables=page.jpegtables,
                                    jpegheader=getattr(page, "jpegheader", None))
        except InputError:
            raise
        except Exception as err:
            raise self._decode_error(err) from None
        if seg is None:
            return None
        seg = np.asarray(seg)
        return seg.reshape(seg.shape[-3:])  # (depth 1, length, width, samples) -> (h, w, s)

    def _to_rgb(self, arr: np.ndarray) -> np.ndarray:
        """Samples as stored -> uint8 RGB: scaled by the image's white, CMYK converted."""
        arr = np.asarray(arr)
        if self._white is not None and arr.dtype.kind in "ui":
            arr = (arr.astype(np.float32) * np.float32(255.0 / self._white)).round().clip(0, 255).astype(np.uint8)
        if self._cmyk and arr.ndim == 3 and arr.shape[2] >= 4:
            scale = 255.0 if arr.dtype == np.uint8 else float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "ui" \
                else 1.0
            ink = arr[:, :, :4].astype(np.float32) / np.float32(scale)
            arr = ((1.0 - ink[:, :, :3]) * (1.0 - ink[:, :, 3:4]) * 255.0).round().clip(0, 255).astype(np.uint8)
        return _to_uint8_rgb(arr, str(self.path))

    def _read_tiff(self, lv: _TiffLevel, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Pixels [y0, y1) x [x0, x1) (inside the level) of one TIFF level as uint8 RGB."""
        if not lv.direct:
            return self._read_zarr(lv, x0, y0, x1, y1)
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for row in range(y0 // lv.seg_h, (y1 - 1) // lv.seg_h + 1):
            ty0 = row * lv.seg_h
            for col in range(x0 // lv.seg_w, (x1 - 1) // lv.seg_w + 1):
                tx0 = col * lv.seg_w
                tile = self._tile(lv, row * lv.n_cols + col)
                ya, yb = max(y0, ty0), min(y1, ty0 + tile.shape[0])
                xa, xb = max(x0, tx0), min(x1, tx0 + tile.shape[1])
                out[ya - y0 : yb - y0, xa - x0 : xb - x0] = tile[ya - ty0 : yb - ty0, xa - tx0 : xb - tx0]
        return out

    def _read_zarr(self, lv: _TiffLevel, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return self._to_rgb(self._zarr_block(lv, x0, y0, x1, y1))

    def _zarr_block(self, lv: _TiffLevel, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Pixels [y0, y1) x [x0, x1) of a level through tifffile's zarr store, (h, w[, colour]) as stored."""
        axes = lv.axes
        colour = next((c for c in "SC" if c in axes), None)
        index = tuple(
            slice(y0, y1) if ax == "Y" else slice(x0, x1) if ax == "X" else slice(None) if ax == colour else 0
            for ax in axes
        )
        try:
            block = np.asarray(lv.zarr()[index])
        except Exception as err:
            raise self._decode_error(err) from None
        kept = [ax for ax in axes if ax in ("Y", "X", colour)]
        order = [kept.index("Y"), kept.index("X")] + ([kept.index(colour)] if colour else [])
        return np.transpose(block, order)

    # -- vendor formats through OpenSlide -------------------------------------------------------
    def _open_slide(self) -> None:
        try:
            import openslide
        except ImportError:
            raise InputError(
                f"{self.path.suffix} slides are read with OpenSlide, which is not installed",
                where=str(self.path),
                fix=_SLIDES_FIX,
            ) from None
        try:
            self._slide = openslide.OpenSlide(str(self.path))
        except Exception as err:  # OpenSlideUnsupportedFormatError, OpenSlideError, OSError
            raise InputError(f"cannot open slide ({err})", where=str(self.path), fix=_FIX_IMAGE) from None
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

    def _read_slide(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        ds = self.level_downsamples[level]
        try:
            im = self._slide.read_region((round(x0 * ds), round(y0 * ds)), level, (x1 - x0, y1 - y0))
        except Exception as err:
            raise InputError(f"cannot read slide region ({err})", where=str(self.path), fix=_FIX_IMAGE) from None
        return np.asarray(_pil_rgb(im))  # RGBA, transparent outside the scanned area: onto white

    # -- JPEG/PNG through PIL: decoded once, then sliced ----------------------------------------
    def _load_pil(self) -> np.ndarray:
        if self._array is None:
            array = load_rgb(self.path)
            if array.shape[:2] != (self.height, self.width):
                raise InputError("image size changed while reading", where=str(self.path), fix=_FIX_IMAGE)
            self._array = array
        return self._array

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
        if self.kind == "tiff":
            block = self._read_tiff(self._levels[level], ix0, iy0, ix1, iy1)
        elif self.kind == "openslide":
            block = self._read_slide(level, ix0, iy0, ix1, iy1)
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
            return _resize(self._array, scale), scale
        return self._level_thumbnail(scale), scale  # a pyramid level, else strips of level 0

    def _level_thumbnail(self, scale: float) -> np.ndarray:
        target = max(1, round(max(self.width, self.height) * scale))
        # the smallest pyramid level still at least as large as the thumbnail
        for level in range(self.level_count - 1, 0, -1):
            lw, lh = self.level_dimensions[level]
            if max(lw, lh) >= target and lw * lh * 3 <= 512 * 2**20:
                return _resize(self.read_region(0, 0, lw, lh, level=level), target / max(lw, lh))
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
        if self._slide is not None:
            self._slide.close()
        if self._fd is not None:
            os.close(self._fd)
        self._tiff = self._slide = self._fd = None
        self._levels = []
        self._tiles.clear()

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    # DataLoader workers pickle the source: send the path, reopen on the other side.
    def __getstate__(self):
        state = self.__dict__.copy()
        if self.kind != "array":
            state["_array"] = None
        state.update(_tiff=None, _slide=None, _fd=None, _levels=[])
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.kind == "tiff":
            self._open_tiff()
        elif self.kind == "openslide":
            self._open_slide()

    def __repr__(self) -> str:
        levels = f", {self.level_count} levels" if self.level_count > 1 else ""
        mpp = f", {self.mpp:g} um/px" if self.mpp else ""
        return f"ImageSource({self.where!r}, {self.width}x{self.height}, {self.kind}{levels}{mpp})"


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
