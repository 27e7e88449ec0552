"""Square H&E patches around spot centres, sized relative to the spot (as squidpy's ``spot_scale``).

A patch is ``patch_scale`` spot diameters wide, so the same call works on a low-res PNG, a hires
thumbnail or a full-resolution slide: ``scale`` maps full-resolution pixel coordinates
(``obsm['spatial']``) onto the image being cropped (see ``read.image.image_for``).

Pixel convention: pixel ``i`` covers coordinates ``[i - 0.5, i + 0.5)``, its centre at ``i``
(matplotlib's ``imshow``, which ``sc.pl.spatial`` uses). A patch of odd side ``s`` around centre
``c`` therefore spans pixels ``round(c) - (s-1)/2 ... round(c) + (s-1)/2``; with an even side the
extra pixel goes to the right/bottom when ``c`` is a whole number. The origin is always
``floor(c - (s - 1) / 2 + 0.5)``, the same rule for every spot.

Pyramids: ``level=`` reads the patches from another level of the image (``ImageSource``): centres
and side are divided by that level's downsample, and the patch is cut by the same rule in the
level's own pixels. ``read_level`` picks the level when a patch will be shrunk anyway (the
coarsest one still at least as fine as the size the patch ends at), so a 1,000 px patch that an
encoder sees at 128 px is read from a 4x or 8x level, decoding 16-64 times fewer pixels.

Patches come out as uint8 RGB (H, W, 3); encoders apply their own normalisation.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from PIL import Image

from .errors import InputError
from .read.image import ImageSource

RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
BLOCK = 2048  # image pixels per side of a region read at once when cropping many patches


def patch_side_px(spot_diameter_fullres: float, scale: float, patch_scale: float = 1.0) -> int:
    """Patch side in image pixels: ``patch_scale`` x spot diameter x image scale, at least 1."""
    side = float(patch_scale) * float(spot_diameter_fullres) * float(scale)
    if not np.isfinite(side) or side <= 0:
        raise InputError(
            f"patch side {side} px from spot diameter {spot_diameter_fullres}, scale {scale}, "
            f"patch_scale {patch_scale}",
            where="patch_scale",
            fix="spot diameter, image scale and patch_scale must be positive numbers",
        )
    return max(1, int(round(side)))


def read_level(source: ImageSource, side_px: int, target_px: int | None) -> int:
    """The pyramid level to cut ``side_px`` patches (level-0 pixels of ``source``) from when they
    end up ``target_px`` wide: the coarsest level whose downsample is at most ``side_px /
    target_px`` (never upsampled), level 0 when they are not shrunk or there is no pyramid."""
    if target_px is None or int(side_px) <= int(target_px) or getattr(source, "level_count", 1) <= 1:
        return 0
    return int(source.best_level(int(side_px) / int(target_px)))


def level_geometry(source: ImageSource, scale: float, side_px: int, level: int) -> tuple[float, int]:
    """Scale from full-resolution coordinates to ``level``'s pixels, and the patch side there."""
    if level == 0:
        return float(scale), int(side_px)
    ds = float(source.level_downsamples[level])
    return float(scale) / ds, max(1, int(round(int(side_px) / ds)))


def patch_origins(centers_fullres: np.ndarray, scale: float, side_px: int) -> np.ndarray:
    """Top-left pixel (x0, y0) of each patch, integer (n, 2), by the module's rounding rule."""
    c = np.asarray(centers_fullres, dtype=np.float64).reshape(-1, 2) * float(scale)
    if not np.isfinite(c).all():
        raise InputError(
            "patch centres hold NaN or infinite values", where="obsm['spatial']", fix="fix spot coordinates"
        )
    return np.floor(c - (side_px - 1) / 2 + 0.5).astype(np.int64)


def _resize(patch: np.ndarray, out_size: int | None, resample: str) -> np.ndarray:
    if out_size is None or (patch.shape[0] == out_size and patch.shape[1] == out_size):
        return patch
    img = Image.fromarray(patch).resize((out_size, out_size), RESAMPLE[resample])
    return np.array(img)  # a writable copy (torch refuses read-only arrays)


def _check(side_px: int, out_size: int | None, resample: str) -> None:
    if int(side_px) < 1:
        raise InputError(f"patch side {side_px} px", where="side_px", fix="use a side of at least 1 pixel")
    if out_size is not None and int(out_size) < 1:
        raise InputError(f"output size {out_size}", where="out_size", fix="use at least 1 pixel")
    if resample not in RESAMPLE:
        raise InputError(
            f"unknown resampling {resample!r}", where="resample", fix=f"use one of {list(RESAMPLE)}"
        )


def crop_patches(
    source: ImageSource,
    centers_fullres: np.ndarray,
    scale: float,
    side_px: int,
    out_size: int | None = None,
    *,
    resample: str = "bicubic",
    level: int = 0,
) -> np.ndarray:
    """Crop one ``side_px`` square per centre and resize to ``out_size``: uint8 (n, out, out, 3).

    ``side_px`` is in the image's level-0 pixels; ``level`` reads from a pyramid level instead
    (side and centres divided by its downsample; ``out_size=None`` then keeps the level's side).
    Patches are grouped by the ``BLOCK``-pixel region their origin falls in, and each region that
    holds many patches is read once; isolated patches are read on their own. A tiled TIFF is
    thus decoded region by region, never whole, and each tile once while it stays in the
    ``ImageSource``'s tile cache.
    """
    _check(int(side_px), out_size, resample)
    scale, side_px = level_geometry(source, scale, int(side_px), int(level))
    origins = patch_origins(centers_fullres, scale, side_px)
    size = side_px if out_size is None else int(out_size)
    out = np.empty((len(origins), size, size, 3), dtype=np.uint8)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (x0, y0) in enumerate(origins):
        groups[(x0 // BLOCK, y0 // BLOCK)].append(i)
    for members in groups.values():
        o = origins[members]
        bx0, by0 = o.min(axis=0)
        bx1, by1 = o.max(axis=0) + side_px
        if len(members) * side_px * side_px * 4 < (bx1 - bx0) * (by1 - by0):  # sparse: read each patch
            for i in members:
                x0, y0 = origins[i]
                out[i] = _resize(source.read_region(x0, y0, side_px, side_px, level=level), out_size, resample)
            continue
        region = source.read_region(bx0, by0, bx1 - bx0, by1 - by0, level=level)
        for i in members:
            x0, y0 = origins[i] - (bx0, by0)
            out[i] = _resize(
                np.ascontiguousarray(region[y0 : y0 + side_px, x0 : x0 + side_px]), out_size, resample
            )
    return out


class PatchDataset(torch.utils.data.Dataset):
    """Patches one by one, for a DataLoader: item ``i`` is uint8 (out, out, 3) around centre ``i``
    (``level``: read from that pyramid level, as :func:`crop_patches`)."""

    def __init__(
        self,
        source: ImageSource,
        centers_fullres: np.ndarray,
        scale: float,
        side_px: int,
        out_size: int | None = None,
        *,
        resample: str = "bicubic",
        level: int = 0,
    ):
        _check(int(side_px), out_size, resample)
        self.source = source
        self.level = int(level)
        scale, self.side_px = level_geometry(source, scale, int(side_px), self.level)
        self.out_size = out_size
        self.resample = resample
        self.origins = patch_origins(centers_fullres, scale, self.side_px)

    def __len__(self) -> int:
        return len(self.origins)

    def __getitem__(self, i: int) -> np.ndarray:
        x0, y0 = self.origins[i]
        patch = self.source.read_region(x0, y0, self.side_px, self.side_px, level=self.level)
        return _resize(patch, self.out_size, self.resample)
