"""Spot grids: array-to-pixel fit, 4x (9x, 16x) denser spots, and the coarse lattice of protocol G.

Visium arrays are hexagonal: a spot (r, c) has neighbours (r, c +- 2) and (r +- 1, c +- 1),
and r + c is always even. Legacy ST arrays are square with neighbours one step apart, or a
checkerboard (as in STUtility's mouse olfactory bulb data): only positions with r + c of one
parity carry a spot, and the neighbours are the diagonal ones (r +- 1, c +- 1), a square
lattice rotated by 45 degrees. ``detect_lattice`` tells the three apart from the positions.

Generated spots sit at the exact midpoints between measured neighbours. On a hex grid each
spot contributes the midpoints towards three "forward" neighbours, (r, c+2), (r+1, c+1) and
(r+1, c-1), so every edge is used once and the count is ~4x. On a square grid each spot
contributes its right and lower edge midpoints and the centre of the cell below-right (needs
all four corners). Midpoints are kept only when every parent is measured, so no generated
spot falls outside the tissue. Coordinates are floats (r + 0.5 is kept as 0.5, never
truncated), so generated spots never collide with measured ones. Denser grids (9x, 16x) cut
every edge into 3 or 4 parts and fill the cells between on the same sub-lattice
(``dense_points``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import InputError

# (row offset, col offset) towards "forward" neighbours, for spacing 1.
_HEX_FORWARD = [(0, 2), (1, 1), (1, -1)]
_SQUARE_EDGES = [(0, 1), (1, 0)]
_SQUARE_CELL = [(0, 1), (1, 0), (1, 1)]


def spot_pitch(xy: np.ndarray) -> float:
    """Median distance (px) from a spot to its nearest neighbour: the grid's pitch, robust to the
    few spots missing at the tissue edge. NaN for fewer than two spots."""
    from scipy.spatial import cKDTree

    xy = np.asarray(xy, np.float64)
    if len(xy) < 2:
        return float("nan")
    return float(np.median(cKDTree(xy).query(xy, k=2)[0][:, 1]))


def grid_of(adata) -> str:
    """'hex' (Visium), 'square' or 'checkerboard' (legacy ST), as the reader recorded."""
    return adata.uns.get("histosge", {}).get("grid", "hex")


def detect_lattice(rows: np.ndarray, cols: np.ndarray, xy: np.ndarray, *, where: str = "spot positions"
                   ) -> tuple[np.ndarray, np.ndarray, str]:
    """Which lattice integer grid positions (row, col) with pixel centres ``xy`` form.

    Returns (array_row, array_col, grid) with grid 'square', 'checkerboard' or 'hex', the grid
    indices brought to the convention ``dense_points`` uses (hex: doubled columns, row + col even
    within a row, same-row neighbours 2 columns apart). Decided from the affine fit of grid to
    pixels, i.e. from the pixel length of each grid step:

    - row + col of one parity everywhere: checkerboard when the (0, 2) step is ~sqrt(2) times the
      diagonal steps (a square lattice rotated by 45 degrees), hex when it is as long as they are
      (Visium's doubled columns; the transposed form, (2, 0), is turned into it);
    - mixed parity: square when the diagonals are ~sqrt(2) x the axis steps; hex in axial
      coordinates when one diagonal is as long as the axis steps; offset hex rows (every other
      row shifted by half a step) when the affine fit leaves half-step residuals.
    """
    rows = _integer_grid(rows, "array_row").astype(np.float64)
    cols = _integer_grid(cols, "array_col").astype(np.float64)
    xy = np.asarray(xy, np.float64)
    if len(rows) < 3:
        return rows, cols, "square"
    coef = fit_array_to_pixel(rows, cols, xy)
    length = lambda dr, dc: float(np.hypot(*(np.array([dr, dc]) @ coef[:2])))  # noqa: E731
    pitch = spot_pitch(xy)
    resid = np.sqrt(((xy - array_to_pixel(coef, rows, cols)) ** 2).sum(1))
    if np.all((rows + cols) % 2 == (rows[0] + cols[0]) % 2):
        diag = (length(1, 1) + length(1, -1)) / 2
        if abs(length(0, 2) / diag - 1) < 0.2:
            return rows, cols, "hex"
        if abs(length(2, 0) / diag - 1) < 0.2:  # rows and columns the other way round
            return cols, rows, "hex"
        return rows, cols, "checkerboard"
    if np.median(resid) < 0.2 * pitch:  # an affine lattice: square, or hex in axial coordinates
        axis = min(length(1, 0), length(0, 1))
        if abs(length(1, -1) / axis - 1) < 0.2:  # axial hex: (r, c) -> (r, 2c + r)
            return rows, 2 * cols + rows, "hex"
        if abs(length(1, 1) / axis - 1) < 0.2:
            return rows, 2 * cols - rows, "hex"
        return rows, cols, "square"
    for shift in (1, -1):  # offset hex rows: odd rows shifted right (+1) or left (-1) by half a step
        r2, c2 = rows, 2 * cols + shift * (rows % 2)
        coef2 = fit_array_to_pixel(r2, c2, xy)
        if np.median(np.sqrt(((xy - array_to_pixel(coef2, r2, c2)) ** 2).sum(1))) < 0.2 * pitch:
            return r2, c2, "hex"
    raise InputError(
        "spot grid positions do not fit a square, checkerboard or hexagonal lattice "
        f"(median distance from the fitted lattice {np.median(resid):.0f} px, spot pitch {pitch:.0f} px)",
        where=where,
        fix="check that the grid indices (x, y / array_row, array_col) and pixel positions belong together",
    )


def lattice_positions(rows: np.ndarray, cols: np.ndarray, grid: str, margin: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Every lattice position (row, col) in the bounding box of ``rows``/``cols`` grown by
    ``margin`` steps: all integer pairs on a square grid; on hex and checkerboard grids those
    whose row + col has the parity of the given spots."""
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    r, c = np.meshgrid(np.arange(rows.min() - margin, rows.max() + margin + 1),
                       np.arange(cols.min() - margin, cols.max() + margin + 1), indexing="ij")
    r, c = r.ravel(), c.ravel()
    if grid in ("hex", "checkerboard"):
        keep = (r + c) % 2 == (rows[0] + cols[0]) % 2
        r, c = r[keep], c[keep]
    return r.astype(np.float64), c.astype(np.float64)


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


def place_generated(rows: np.ndarray, cols: np.ndarray, xy: np.ndarray, points: pd.DataFrame
                    ) -> tuple[np.ndarray, float]:
    """Pixel centres of generated spots, and the RMS residual (px) of the array-to-pixel fit.

    The affine fit over all measured spots maps a generated spot's grid position to pixels;
    since real sections deviate from a perfect lattice (her2st by up to ~30 px), each one is
    then shifted by its parents' residuals, weighted as its grid position weights them (a
    midpoint: the mean of its two parents' measured centres). On an ideal lattice both are
    the same point.
    """
    coef = fit_array_to_pixel(rows, cols, xy)
    resid = np.asarray(xy, np.float64) - array_to_pixel(coef, rows, cols)
    base = array_to_pixel(coef, points["array_row"].to_numpy(), points["array_col"].to_numpy())
    shift = np.array([np.asarray(w, np.float64) @ resid[list(p)]
                      for p, w in zip(points["parents"], points["weights"], strict=True)]).reshape(-1, 2)
    return base + shift, float(np.sqrt((resid**2).sum(1).mean()))


#: Densities that ``dense_points`` can generate: steps**2 spots per measured one.
FACTORS = (4, 9, 16)


def steps_of(factor: int) -> int:
    """Subdivisions per grid edge for a generation ``factor`` (4 -> 2, 9 -> 3, 16 -> 4)."""
    if factor not in FACTORS:
        raise InputError(f"generation factor must be one of {', '.join(map(str, FACTORS))}, got {factor}",
                         where="--factor", fix="e.g. --factor 4 (midpoints) or --factor 9")
    return int(round(factor**0.5))


#: Lattices the generation code knows (``uns['histosge']['grid']``).
GRIDS = ("hex", "square", "checkerboard")


def _parity(rows: np.ndarray, cols: np.ndarray) -> int:
    return int((int(rows[0]) + int(cols[0])) % 2) if len(rows) else 0


def _to_diagonal(rows: np.ndarray, cols: np.ndarray, parity: int) -> tuple[np.ndarray, np.ndarray]:
    """Checkerboard (row, col) -> square lattice (u, v) = ((col + row - p) / 2, (col - row - p) / 2)."""
    return (cols + rows - parity) // 2, (cols - rows - parity) // 2


def dense_points(rows: np.ndarray, cols: np.ndarray, grid: str, factor: int = 4, spacing: int = 1) -> pd.DataFrame:
    """Spots ``factor`` times denser than a grid whose neighbours are ``spacing`` steps apart.

    Every edge between measured neighbours is cut into ``s = sqrt(factor)`` equal parts, and
    the cells between them (hex: triangles of three neighbours; square: squares of four) are
    filled on the same sub-lattice, so each measured spot brings ``factor - 1`` new ones. A
    point is kept only when every corner of its edge or cell is measured, so none falls off
    the tissue. Returns array_row, array_col (float), ``parents`` (indices of those corners)
    and ``weights`` (the point's barycentric / bilinear weights on them, summing to 1).
    ``factor=4`` gives the midpoints; ``spacing=s`` on the coarse lattice of
    ``coarse_lattice_mask(..., factor)`` yields exactly the measured spots left out of it.
    """
    s = steps_of(factor)
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}")
    rows = _integer_grid(rows, "array_row")
    cols = _integer_grid(cols, "array_col")
    if grid == "checkerboard":  # a square lattice rotated by 45 degrees: generate there, map back
        p = _parity(rows, cols)
        u, v = _to_diagonal(rows, cols, p)
        sq = dense_points(u, v, "square", factor, spacing)
        ur, vr = sq["array_row"].to_numpy(), sq["array_col"].to_numpy()
        return sq.assign(array_row=ur - vr, array_col=ur + vr + p)
    index = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(rows, cols, strict=True))}
    found: list[tuple] = []  # (row, col, parents, weights)
    edges = _HEX_FORWARD if grid == "hex" else _SQUARE_EDGES
    for r, c in zip(rows, cols, strict=True):
        for d in edges:  # points on the edges towards forward neighbours
            for t in range(1, s):
                _add_point(found, index, r, c, spacing, [(0, 0), d], [s - t, t], s)
        if grid == "hex":  # the two triangles a spot p owns: (p, p+(0,2), p+(1,1)), (p, p+(1,1), p+(1,-1))
            for u, v in ((_HEX_FORWARD[0], _HEX_FORWARD[1]), (_HEX_FORWARD[1], _HEX_FORWARD[2])):
                for i in range(1, s):
                    for j in range(1, s - i):
                        _add_point(found, index, r, c, spacing, [(0, 0), u, v], [s - i - j, i, j], s)
        else:  # the cell below-right, bilinear weights on its four corners
            for i in range(1, s):
                for j in range(1, s):
                    _add_point(found, index, r, c, spacing, [(0, 0), *_SQUARE_CELL],
                               [(s - i) * (s - j), (s - i) * j, i * (s - j), i * j], s * s)
    return pd.DataFrame({"array_row": np.asarray([f[0] for f in found], float),
                         "array_col": np.asarray([f[1] for f in found], float),
                         "parents": [f[2] for f in found], "weights": [f[3] for f in found]})


def _add_point(found: list, index: dict, r, c, spacing: int, offsets, nums, den: int) -> None:
    """Append the point sum(nums[k] / den * corner_k) if every corner (r, c) + spacing * offset is
    measured. Integer numerators keep lattice positions exact (r + 1, not r + 0.9999)."""
    corners = [index.get((int(r + dr * spacing), int(c + dc * spacing))) for dr, dc in offsets]
    if any(k is None for k in corners):
        return
    row = float(r) + sum(n * dr * spacing for n, (dr, _) in zip(nums, offsets, strict=True)) / den
    col = float(c) + sum(n * dc * spacing for n, (_, dc) in zip(nums, offsets, strict=True)) / den
    found.append((row, col, tuple(corners), tuple(n / den for n in nums)))


def _integer_grid(values, name: str) -> np.ndarray:
    """Grid indices as int64; fractional ones are an error, never truncated."""
    arr = np.asarray(values, np.float64)
    if arr.size and not np.all(np.isfinite(arr) & (arr == np.round(arr))):
        bad = arr[~(np.isfinite(arr) & (arr == np.round(arr)))][0]
        raise InputError(
            f"{name} holds non-integer grid positions (e.g. {bad:g})",
            where=f"obs['{name}']",
            fix="give whole-number grid indices (array_row/array_col, or legacy-ST x/y), not adjusted positions",
        )
    return arr.astype(np.int64)


def midpoints(rows: np.ndarray, cols: np.ndarray, grid: str, spacing: int = 1) -> pd.DataFrame:
    """The 4x case of ``dense_points``: midpoints between measured neighbours (and, on a square
    grid, the centres of fully measured cells)."""
    return dense_points(rows, cols, grid, 4, spacing)


def coarse_lattice_mask(rows: np.ndarray, cols: np.ndarray, grid: str, factor: int = 4) -> np.ndarray:
    """Spots of the coarse lattice used by protocol G (one spot in ``factor``).

    In lattice coordinates (Visium: i = (col - row) / 2, j = row; legacy ST: x, y) both are
    multiples of ``s = sqrt(factor)``. For 4x: Visium array_row even and array_col % 4 ==
    array_row % 4; legacy ST even x and even y. Its generated points
    (``dense_points(..., factor, spacing=s)``) are measured spots, so generation can be scored
    against ground truth.
    """
    s = steps_of(factor)
    rows = _integer_grid(rows, "array_row")
    cols = _integer_grid(cols, "array_col")
    if grid == "hex":
        return (rows % s == 0) & (((cols - rows) // 2) % s == 0)
    if grid == "checkerboard":
        u, v = _to_diagonal(rows, cols, _parity(rows, cols))
        return (u % s == 0) & (v % s == 0)
    return (rows % s == 0) & (cols % s == 0)


def generation_split(rows: np.ndarray, cols: np.ndarray, grid: str, factor: int = 4
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) for protocol G: the coarse lattice, and the measured spots at its
    ``factor``-times denser generated points."""
    mask = coarse_lattice_mask(rows, cols, grid, factor)
    train = np.flatnonzero(mask)
    points = dense_points(np.asarray(rows)[train], np.asarray(cols)[train], grid, factor, spacing=steps_of(factor))
    where = {(float(r), float(c)): i for i, (r, c) in enumerate(zip(rows, cols, strict=True))}
    test = sorted({where[k] for k in zip(points["array_row"], points["array_col"], strict=True) if k in where})
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
