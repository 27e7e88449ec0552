"""Tiled or pyramidal TIFF, OME-TIFF and SVS through tifffile: the ``tifffile`` backend of
``read.image.ImageSource``.

Only the tiles (or strips) a region touches are decoded, each at most once while it stays in a
small shared cache of decoded tiles (``TILE_CACHE_BYTES``), so neighbouring patches never decode
a tile twice and a 40k x 40k slide is never held whole. Tiles are read with ``os.pread`` and
decoded by tifffile's own segment decoder, so threads share the file. Measured against tiffslide,
tiatoolbox's WSIReader and OpenSlide on the shipped slides (``bench/image_readers.py``,
bench/results/image_readers.json): the same pixels, none of them as fast in both random and
reading order without several times the memory, so this reader stays.

Samples become RGB as what they are: CMYK is converted, integer samples are scaled by the image's
white (12-bit data in 16-bit samples: 4095), empty (0-byte) tiles are glass, and an image with no
colour to read (greyscale, MinIsWhite, palette, Lab) is refused naming its
PhotometricInterpretation; a file cut short is refused as truncated. The pixel size comes from
OME-XML ``PhysicalSizeX`` (any OME length unit), an Aperio SVS description's ``MPP = x``, or the
``XResolution`` / ``ResolutionUnit`` tags when they give 0.01-20 um/px (72-600 dpi, the defaults
image software writes, give 42-353 um/px and are ignored).
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

from ..errors import InputError
from .checks import InputWarning
from .pixels import FIX_IMAGE, Backend, to_uint8_rgb

#: Decoded tiles kept per image (bytes), shared by all levels: a band of tiles across a slide.
TILE_CACHE_BYTES = 64 * 2**20
#: Resolution tags outside this range (um per pixel) are software defaults, not measurements.
MPP_FROM_TAGS_RANGE = (0.01, 20.0)
#: OME ``UnitsLength`` (and common spellings) in micrometres.
_UNIT_UM = {
    "m": 1e6, "dm": 1e5, "cm": 1e4, "mm": 1e3, "µm": 1.0, "μm": 1.0, "um": 1.0, "micron": 1.0, "micrometer": 1.0,
    "nm": 1e-3, "pm": 1e-6, "å": 1e-4, "angstrom": 1e-4, "in": 25400.0, "inch": 25400.0, "thou": 25.4,
    "mil": 25.4, "li": 2116.67, "pt": 25400.0 / 72, "ft": 304800.0, "yd": 914400.0,
}


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


class TileCache:
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


class TiffLevel:
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


class TiffBackend(Backend):
    """One TIFF file's pyramid: ``read`` decodes the tiles a region touches (cached).

    ``tiles``: the decoded-tile cache; ``levels``: the pyramid levels (``TiffLevel``).
    """

    kind = "tiff"

    def __init__(self, path: Path, mpp: float | None = None):
        super().__init__(path, mpp)
        self._tiff = None
        self._fd: int | None = None
        self.levels: list[TiffLevel] = []
        self.tiles = TileCache(TILE_CACHE_BYTES)
        #: integer samples are scaled by 255 / white (12-bit data in 16-bit samples: 4095)
        self._white: float | None = None
        self._cmyk = False
        self._open_tiff()

    def read(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return self._read_tiff(self.levels[level], x0, y0, x1, y1)

    def _open_tiff(self) -> None:
        import tifffile

        log, said = logging.getLogger("tifffile"), _Said()
        log.addHandler(said)
        propagate, log.propagate = log.propagate, False  # tifffile's own lines would stray onto stderr
        try:
            self._tiff = tifffile.TiffFile(self.path)
            series = self._tiff.series[0]
            n_levels = max(1, len(series.levels))
            self.levels = [TiffLevel(self._tiff, series, i) for i in range(n_levels)]
            self._check_complete(said.lines)
            if any(lv.direct for lv in self.levels):
                self._fd = os.open(self.path, os.O_RDONLY)
            first_open = not getattr(self, "_checked", False)
            if first_open:
                self._check_colour()
                self._checked = True
            for lv in self.levels:
                lv.fillvalue = 0 if self._cmyk else _glass(lv.page.dtype)
            if self._mpp_override is None:
                self._pixel_size_from_tiff(series)
        except InputError:
            self.close()
            raise
        except Exception as err:  # tifffile raises many types for broken files
            self.close()
            raise InputError(f"cannot read TIFF ({err})", where=str(self.path), fix=FIX_IMAGE) from None
        finally:
            log.removeHandler(said)
            log.propagate = propagate
        if first_open:
            self._warn_empty_tiles()
        base = self.levels[0]
        self.width, self.height = base.width, base.height
        self.level_dimensions = [(lv.width, lv.height) for lv in self.levels]

    def _check_complete(self, said: list[str]) -> None:
        """A file cut short is refused as that, not read as one without metadata or with holes:
        image data past the end of the file, or tags tifffile found pointing past it."""
        size = os.path.getsize(self.path)
        end = 0
        for lv in self.levels:
            for page in lv.pages:
                offsets = np.asarray(getattr(page, "dataoffsets", ()), np.int64)
                counts = np.asarray(getattr(page, "databytecounts", ()), np.int64)
                if len(offsets) == len(counts) and len(counts):
                    end = max(end, int((offsets + counts)[counts > 0].max(initial=0)))
        if end > size:
            raise InputError(f"the TIFF file is truncated: it is {size:,} bytes and its image data runs to byte "
                             f"{end:,}", where=str(self.path), fix=FIX_IMAGE)
        broken = [line for line in said if re.search(r"invalid value offset|corrupted|truncated|beyond", line, re.I)]
        if broken:
            m = re.search(r"TiffTag (\d+)\b.*invalid value offset (\d+)", broken[0])
            why = (f"tag {m[1]}'s values at byte {int(m[2]):,} run past the end of the {size:,}-byte file" if m
                   else re.sub(r"<[^>]*>\s*", "", broken[0]).strip()[:200])
            raise InputError(f"the TIFF file is truncated or damaged ({why})", where=str(self.path), fix=FIX_IMAGE)

    def _check_colour(self) -> None:
        """H&E is read as RGB: CMYK is converted, integer samples are scaled by their real white
        (12-bit data in 16-bit samples: 4095), and what has no colour to read (greyscale,
        MinIsWhite, palette, Lab ...) is refused in one line naming the property."""
        import tifffile

        lv = self.levels[0]
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

    def _white_level(self, lv: TiffLevel, dtype: np.dtype) -> float:
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
            brightest = self._brightest(self.levels[-1])
            white = next((float(2**b - 1) for b in (8, 10, 12, 14, 16) if brightest <= 2**b - 1), top)
        if white < top:
            warnings.warn(f"{self.path}: {dtype.itemsize * 8}-bit samples that reach at most {white:g} "
                          f"({int(np.log2(white + 1))}-bit data); read with {white:g} as white", InputWarning,
                          stacklevel=5)
        return white

    def _brightest(self, lv: TiffLevel) -> float:
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
        lv = self.levels[0]
        counts = np.asarray(getattr(lv.page, "databytecounts", ()), np.int64)
        empty = int((counts == 0).sum())
        if empty:
            warnings.warn(f"{self.path}: {empty} of {len(counts)} tiles at full resolution are empty (0 bytes); read "
                          "as glass (white), as a sparse TIFF's skipped background", InputWarning, stacklevel=5)

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
        fix = FIX_IMAGE
        if "imagecodecs" in msg or "codec" in msg.lower():
            fix = "pip install imagecodecs (needed for JPEG/JPEG2000-compressed TIFF/SVS)"
        return InputError(f"cannot decode TIFF region ({msg})", where=str(self.path), fix=fix)

    def _tile(self, lv: TiffLevel, index: int) -> np.ndarray:
        """Segment ``index`` of level ``lv`` as uint8 RGB, cropped to the image (from the cache)."""
        key = (lv.index, index)
        tile = self.tiles.get(key)
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
        self.tiles.put(key, tile)
        return tile

    def _raw_segment(self, lv: TiffLevel, index: int) -> np.ndarray | None:
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
        return to_uint8_rgb(arr, str(self.path))

    def _read_tiff(self, lv: TiffLevel, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
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

    def _read_zarr(self, lv: TiffLevel, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return self._to_rgb(self._zarr_block(lv, x0, y0, x1, y1))

    def _zarr_block(self, lv: TiffLevel, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
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

    def close(self) -> None:
        if self._tiff is not None:
            self._tiff.close()
        if self._fd is not None:
            os.close(self._fd)
        self._tiff = self._fd = None
        self.levels = []
        self.tiles.clear()

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
        state.update(_tiff=None, _fd=None, levels=[])
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._open_tiff()
