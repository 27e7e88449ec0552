import numpy as np
import pytest

from histosge import geometry
from histosge.errors import InputError


def hex_grid(n_rows=20, n_cols=40):
    rows, cols = [], []
    for r in range(n_rows):
        for c in range(r % 2, n_cols, 2):
            rows.append(r)
            cols.append(c)
    return np.array(rows, float), np.array(cols, float)


def square_grid(n=15):
    r, c = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return r.ravel().astype(float), c.ravel().astype(float)


def test_hex_midpoints_are_exact_halfway_and_distinct():
    rows, cols = hex_grid()
    mids = geometry.midpoints(rows, cols, "hex")
    for (r, c, parents) in mids[["array_row", "array_col", "parents"]].itertuples(index=False):
        i, j = parents
        assert r == (rows[i] + rows[j]) / 2 and c == (cols[i] + cols[j]) / 2
        # parents are grid neighbours
        assert (abs(rows[i] - rows[j]), abs(cols[i] - cols[j])) in {(0, 2), (1, 1)}
    measured = set(zip(rows, cols, strict=False))
    generated = list(zip(mids.array_row, mids.array_col, strict=False))
    assert len(set(generated)) == len(generated), "each edge used once"
    assert not measured & set(generated), "no generated spot collides with a measured one"
    assert any(r % 1 == 0.5 for r, _ in generated), "half-grid rows are kept, not truncated"


def test_hex_midpoints_give_about_4x():
    rows, cols = hex_grid(60, 120)
    total = len(rows) + len(geometry.midpoints(rows, cols, "hex"))
    assert 3.8 < total / len(rows) <= 4.0


def test_square_midpoints_give_about_4x_and_need_measured_parents():
    rows, cols = square_grid(30)
    mids = geometry.midpoints(rows, cols, "square")
    assert 3.8 < (len(rows) + len(mids)) / len(rows) <= 4.0
    # drop a spot: none of its midpoints may survive (no generated spot off tissue)
    keep = ~((rows == 5) & (cols == 5))
    mids2 = geometry.midpoints(rows[keep], cols[keep], "square")
    near = set(zip(mids2.array_row, mids2.array_col, strict=False))
    for p in [(5, 5.5), (5.5, 5), (4.5, 5), (5, 4.5), (5.5, 5.5), (4.5, 4.5)]:
        assert p not in near


def test_array_to_pixel_fit_recovers_affine():
    rows, cols = hex_grid()
    A = np.array([[0.0, 138.0], [69.0, 0.0], [1000.0, 2000.0]])  # row -> y, col -> x
    px = np.column_stack([rows, cols, np.ones_like(rows)]) @ A
    px += np.random.default_rng(0).normal(scale=0.5, size=px.shape)
    coef = geometry.fit_array_to_pixel(rows, cols, px)
    assert np.allclose(coef, A, atol=0.1)
    mid = geometry.array_to_pixel(coef, np.array([2.5]), np.array([3.5]))
    assert np.allclose(mid, [[1000 + 3.5 * 69, 2000 + 2.5 * 138]], atol=0.5)


def test_fit_rejects_degenerate_grid():
    with pytest.raises(InputError):
        geometry.fit_array_to_pixel(np.zeros(5), np.arange(5.0), np.zeros((5, 2)))


@pytest.mark.parametrize("grid", ["hex", "square"])
def test_generation_split_scores_the_coarse_midpoints(grid):
    rows, cols = hex_grid(40, 80) if grid == "hex" else square_grid(30)
    train, test = geometry.generation_split(rows, cols, grid)
    assert not set(train) & set(test)
    coarse = geometry.coarse_lattice_mask(rows, cols, grid)
    assert coarse[train].all() and not coarse[test].any()
    assert 0.2 < len(train) / len(rows) < 0.3
    assert len(test) / len(rows) > 0.65
    mids = geometry.midpoints(rows[train], cols[train], grid, spacing=2)
    assert set(zip(rows[test], cols[test], strict=False)) == set(zip(mids.array_row, mids.array_col, strict=False))


def test_random_split_disjoint_complete_and_seeded():
    tr, te = geometry.random_split(100, 0.5, seed=3)
    assert len(set(tr) | set(te)) == 100 and not set(tr) & set(te)
    tr2, te2 = geometry.random_split(100, 0.5, seed=3)
    assert (tr == tr2).all() and (te == te2).all()
    with pytest.raises(InputError):
        geometry.random_split(100, 1.5, seed=0)
    with pytest.raises(InputError):
        geometry.random_split(12, 0.5, seed=0)


def test_place_generated_follows_parents_on_a_warped_grid():
    rows, cols = hex_grid(10, 20)
    xy = np.column_stack([cols * 69.0, rows * 120.0])
    xy += np.random.default_rng(0).normal(scale=8, size=xy.shape)  # a warped section
    mids = geometry.midpoints(rows, cols, "hex")
    placed, rms = geometry.place_generated(rows, cols, xy, mids)
    expected = np.array([xy[list(p)].mean(0) for p in mids["parents"]])
    assert np.allclose(placed, expected) and 5 < rms < 15


@pytest.mark.parametrize("grid", ["hex", "square"])
@pytest.mark.parametrize("factor", [9, 16])
def test_denser_grids_give_factor_times_the_spots_on_exact_positions(grid, factor):
    rows, cols = hex_grid(60, 120) if grid == "hex" else square_grid(40)
    pts = geometry.dense_points(rows, cols, grid, factor)
    assert factor - 1 < (len(rows) + len(pts)) / len(rows) <= factor
    assert factor * 0.9 < (len(rows) + len(pts)) / len(rows)
    weights = [np.asarray(w) for w in pts["weights"]]
    assert all(np.isclose(w.sum(), 1) and (w > 0).all() for w in weights)
    # each point is the weighted mean of its parents (so placement on an ideal lattice is exact)
    for axis, values in (("array_row", rows), ("array_col", cols)):
        expected = [w @ values[list(p)] for p, w in zip(pts["parents"], weights, strict=True)]
        assert np.allclose(pts[axis], expected)
    generated = list(zip(pts.array_row, pts.array_col, strict=True))
    assert len(set(generated)) == len(generated)
    assert not set(zip(rows, cols, strict=True)) & set(generated)


@pytest.mark.parametrize("grid", ["hex", "square"])
def test_dense_points_at_4x_are_the_midpoints_and_unknown_factors_are_refused(grid):
    rows, cols = hex_grid() if grid == "hex" else square_grid()
    mids = geometry.midpoints(rows, cols, grid)
    pts = geometry.dense_points(rows, cols, grid, 4)
    assert set(zip(mids.array_row, mids.array_col, strict=True)) == set(zip(pts.array_row, pts.array_col, strict=True))
    for bad in (2, 8, 25):
        with pytest.raises(InputError, match="--factor"):
            geometry.dense_points(rows, cols, grid, bad)


@pytest.mark.parametrize("grid", ["hex", "square"])
@pytest.mark.parametrize("factor", [4, 9, 16])
def test_generation_split_at_each_factor_scores_exactly_the_generated_positions(grid, factor):
    rows, cols = hex_grid(60, 120) if grid == "hex" else square_grid(40)
    s = geometry.steps_of(factor)
    train, test = geometry.generation_split(rows, cols, grid, factor)
    coarse = geometry.coarse_lattice_mask(rows, cols, grid, factor)
    assert coarse[train].all() and not coarse[test].any()
    assert 0.5 / factor < len(train) / len(rows) < 1.5 / factor
    pts = geometry.dense_points(rows[train], cols[train], grid, factor, spacing=s)
    # on a full grid every generated position is a measured spot, and the test spots are those
    assert set(zip(rows[test], cols[test], strict=True)) == set(zip(pts.array_row, pts.array_col, strict=True))
    # the coarse lattice really is a lattice s steps apart: each spot's forward neighbour at s steps is on it
    lattice = set(zip(rows[train], cols[train], strict=True))
    step = (0, 2 * s) if grid == "hex" else (0, s)
    assert sum((r + step[0], c + step[1]) in lattice for r, c in lattice) > 0.8 * len(lattice)
