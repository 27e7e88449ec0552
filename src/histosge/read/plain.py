"""Plain images and in-memory arrays: the ``pil`` and ``array`` backends of ``read.image.ImageSource``.

PIL cannot decode part of a JPEG, so the first region read decodes a JPEG / PNG once and keeps
it (about 3 bytes per pixel); one level, ``mpp`` None unless given (their DPI fields are software
defaults, not a measurement). An in-memory array (an ``uns['spatial']`` image) is used as it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .pixels import FIX_IMAGE, Backend, downsample_file, load_rgb, pil_size, resize, to_uint8_rgb


class PilBackend(Backend):
    """A JPEG / PNG (anything PIL opens), decoded whole on the first read."""

    kind = "pil"

    def __init__(self, path: Path, mpp: float | None = None):
        super().__init__(path, mpp)
        self.width, self.height = pil_size(path)
        self.level_dimensions = [(self.width, self.height)]
        self.array: np.ndarray | None = None

    def read(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        if self.array is None:
            array = load_rgb(self.path)
            if array.shape[:2] != (self.height, self.width):
                raise InputError("image size changed while reading", where=str(self.path), fix=FIX_IMAGE)
            self.array = array
        return self.array[y0:y1, x0:x1]

    def thumbnail(self, max_side: int):
        return downsample_file(self.path, max_side)  # JPEG decoded at reduced size

    def __getstate__(self):  # a worker decodes the file again rather than receive it
        return {**self.__dict__, "array": None}


class ArrayBackend(Backend):
    """An image already in memory (an ``uns['spatial']`` image), as uint8 RGB."""

    kind = "array"

    def __init__(self, array: np.ndarray, where: str):
        super().__init__(None)
        self.array = to_uint8_rgb(array, where)
        self.height, self.width = self.array.shape[:2]
        self.level_dimensions = [(self.width, self.height)]

    def read(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        return self.array[y0:y1, x0:x1]

    def thumbnail(self, max_side: int):
        scale = min(1.0, max_side / max(self.width, self.height, 1))
        return resize(self.array, scale), scale
