"""Spot grids: array-to-pixel fit, 4x midpoints, and the coarse lattice of protocol G.

Visium arrays are hexagonal: a spot (r, c) has neighbours (r, c +- 2) and (r +- 1, c +- 1),
and r + c is always even. Legacy ST arrays are square with neighbours one step apart.

Generated spots sit at the exact midpoints between measured neighbours. On a hex grid each
spot contributes the midpoints towards three "forward" neighbours, (r, c+2), (r+1, c+1) and
(r+1, c-1), so every edge is used once and the count is ~4x. On a square grid each spot
contributes its right and lower edge midpoints and the centre of the cell below-right (needs
all four corners). Midpoints are kept only when every parent is measured, so no generated
spot falls outside the tissue. Coordinates are floats (r + 0.5 is kept as 0.5, never
truncated), so generated spots never collide with measured ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import InputError

# (row offset, col offset) towards "forward" neighbours, for spacing 1.
_HEX_FORWARD = [(0, 2), (1, 1), (1, -1)]
_SQUARE_EDGES = [(0, 1), (1, 0)]
_SQUARE_CELL = [(0, 1), (1, 0), (1, 1)]


def grid_of(adata) -> str:
    """'hex' (Visium) or 'square' (legacy ST), as the reader recorded."""
    return adata.uns.get("histosge", {}).get("grid", "hex")


def fit_array_to_pixel(rows: np.ndarray, cols: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Least-squares affine map (row, col, 1) -> pixel (x, y); returns a 3 x 2 matrix.

    Measured spot centres scatter by a pixel or two around the ideal lattice; an affine fit
    over all of them places generated spots better than any single pair of parents.
    """
    design = np.column_stack([rows, cols, np.ones(len(rows))]).astype(np.float64)
    if len(rows) < 3 or np.linalg.matrix_rank(design) < 3:
        raise InputError(
            "spot grid coordinates are degenerate (fewer than 3 spots or all on one line)",
            where="spot positions",
            fix="check array_row/array_col (Visium) or x/y (legacy ST)",
        )
    coef, *_ = np.linalg.lstsq(design, np.asarray(pixels, np.float64), rcond=None)
    return coef


def array_to_pixel(coef: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return np.column_stack([rows, cols, np.ones(len(rows))]) @ coef


def place_midpoints(rows: np.ndarray, cols: np.ndarray, xy: np.ndarray, mids: pd.DataFrame
                    ) -> tuple[np.ndarray, float]:
    """Pixel centres of generated spots, and the RMS residual (px) of the array-to-pixel fit.

    The affine fit over all measured spots maps a midpoint's grid position to pixels; since
    real sections deviate from a perfect lattice (her2st by up to ~30 px), each midpoint is
    then shifted by the mean residual of its parents, i.e. placed at the mean of its parents'
    measured centres. On an ideal lattice both are the same point.
    """
    coef = fit_array_to_pixel(rows, cols, xy)
    resid = np.asarray(xy, np.float64) - array_to_pixel(coef, rows, cols)
    base = array_to_pixel(coef, mids["array_row"].to_numpy(), mids["array_col"].to_numpy())
    shift = np.array([resid[list(p)].mean(0) for p in mids["parents"]]).reshape(-1, 2)
    return base + shift, float(np.sqrt((resid**2).sum(1).mean()))


def midpoints(rows: np.ndarray, cols: np.ndarray, grid: str, spacing: int = 1) -> pd.DataFrame:
    """Midpoints between measured neighbours of a grid whose neighbours are ``spacing`` steps apart.

    Returns a frame with array_row, array_col (float) and the indices of the parent spots
    (``parents``, a tuple per row). ``spacing=2`` on the coarse lattice of protocol G
    yields exactly the positions of the measured spots left out of it.
    """
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    index = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(rows, cols, strict=True))}
    out_rows, out_cols, parents = [], [], []
    if grid == "hex":
        for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
            for dr, dc in _HEX_FORWARD:
                j = index.get((int(r + dr * spacing), int(c + dc * spacing)))
                if j is not None:
                    out_rows.append(r + dr * spacing / 2)
                    out_cols.append(c + dc * spacing / 2)
                    parents.append((i, j))
    elif grid == "square":
        for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
            for dr, dc in _SQUARE_EDGES:
                j = index.get((int(r + dr * spacing), int(c + dc * spacing)))
                if j is not None:
                    out_rows.append(r + dr * spacing / 2)
                    out_cols.append(c + dc * spacing / 2)
                    parents.append((i, j))
            corners = [index.get((int(r + dr * spacing), int(c + dc * spacing))) for dr, dc in _SQUARE_CELL]
            if all(k is not None for k in corners):
                out_rows.append(r + spacing / 2)
                out_cols.append(c + spacing / 2)
                parents.append((i, *corners))
    else:
        raise ValueError(f"unknown grid {grid!r}")
    return pd.DataFrame(
        {"array_row": np.asarray(out_rows, float), "array_col": np.asarray(out_cols, float), "parents": parents}
    )


def coarse_lattice_mask(rows: np.ndarray, cols: np.ndarray, grid: str) -> np.ndarray:
    """Spots of the coarse lattice used by protocol G (a quarter of the grid).

    Visium: array_row even and array_col % 4 == array_row % 4; legacy ST: even x and even y.
    Its midpoints (``midpoints(..., spacing=2)``) are measured spots, so 4x generation can be
    scored against ground truth.
    """
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    if grid == "hex":
        return (rows % 2 == 0) & (cols % 4 == rows % 4)
    return (rows % 2 == 0) & (cols % 2 == 0)


def generation_split(rows: np.ndarray, cols: np.ndarray, grid: str) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) for protocol G: the coarse lattice, and measured spots at its midpoints."""
    mask = coarse_lattice_mask(rows, cols, grid)
    train = np.flatnonzero(mask)
    mids = midpoints(np.asarray(rows)[train], np.asarray(cols)[train], grid, spacing=2)
    where = {(float(r), float(c)): i for i, (r, c) in enumerate(zip(rows, cols, strict=True))}
    test = sorted({where[k] for k in zip(mids["array_row"], mids["array_col"], strict=True) if k in where})
    return train, np.asarray(test, dtype=np.int64)


def random_split(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) for protocol R: a seeded random ``holdout`` fraction is held out."""
    if not 0 < holdout < 1:
        raise InputError(f"holdout must be between 0 and 1, got {holdout}", where="--holdout", fix="e.g. 0.5")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_test = int(round(n * holdout))
    if n_test < 1 or n - n_test < 10:
        raise InputError(
            f"{n} spots cannot be split into {n - n_test} training and {n_test} held-out spots",
            where="--holdout",
            fix="use a section with more spots or another holdout fraction",
        )
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])
