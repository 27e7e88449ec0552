"""The standard downstream analysis runs on a histosge output, in the environment the README installs.

What users do next with a ``superres`` output (the paper's own spatial-domain step): scanpy's
``pca -> neighbors -> umap -> leiden``, and squidpy's spatial statistics. The output is written and
read back with ``scanpy.read_h5ad``, as a user would. scanpy switches from exact neighbours to
pynndescent above 8,192 spots, which is where pynndescent 0.7.0 crashed (``'csr_array' object has
no attribute 'getnnz'``): the section must give more spots than that.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest

import histosge

PYNNDESCENT_ABOVE = 8192  # scanpy.neighbors: sklearn's exact search below, pynndescent from here on


@pytest.fixture(scope="module")
def output(data_dir, tmp_path_factory):
    """A real DLPFC superres output (151673, 4x: ~14,000 spots) as a file. The knn method reads no
    image, so the fixture costs ~20 s; the output has the same layout whatever the method."""
    from histosge._atomic import write_output

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        section = histosge.read_section("dlpfc:151673", data_dir=data_dir)
    out = histosge.superres(section, method="knn", n_genes=200, progress=False)
    return write_output(out, tmp_path_factory.mktemp("downstream") / "151673_superres.h5ad")


@pytest.mark.slow
def test_scanpy_pca_neighbors_umap_leiden(output):
    import scanpy as sc

    a = sc.read_h5ad(output)
    assert a.n_obs >= max(5000, PYNNDESCENT_ABOVE)  # the approximate-neighbour path users hit
    sc.pp.pca(a, n_comps=20)
    sc.pp.neighbors(a)  # crashed here with pynndescent 0.7.0
    assert a.obsp["connectivities"].shape == (a.n_obs, a.n_obs)
    sc.tl.umap(a, maxiter=50)  # fewer epochs than the default: the point is that it runs
    assert a.obsm["X_umap"].shape == (a.n_obs, 2) and np.isfinite(a.obsm["X_umap"]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scanpy 1.11 announces its next default flavour
        sc.tl.leiden(a)  # the backend (leidenalg + igraph) comes with the README install
        sc.tl.leiden(a, flavor="igraph", n_iterations=2, directed=False, key_added="leiden_igraph")
    for key in ("leiden", "leiden_igraph"):
        assert 2 <= a.obs[key].nunique() < a.n_obs // 10


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("squidpy") is None,
                    reason='squidpy is not installed (pip install "histosge[squidpy]"; it is not in '
                           "requirements.lock: squidpy 1.8 needs imagecodecs<2026 and spatialdata, dask, "
                           "geopandas, so it goes in its own environment)")
def test_squidpy_spatial_neighbors_and_autocorr(output):
    import scanpy as sc
    import squidpy as sq

    a = sc.read_h5ad(output)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # squidpy 1.8 renames it in 1.9
        sq.gr.spatial_neighbors(a, coord_type="generic", n_neighs=6)
    assert a.obsp["spatial_connectivities"].shape == (a.n_obs, a.n_obs)
    genes = list(a.var_names[:20])
    sq.gr.spatial_autocorr(a, mode="moran", genes=genes, n_perms=None)
    moran = a.uns["moranI"]
    assert set(genes) <= set(moran.index) and np.isfinite(moran["I"]).all()
    assert (moran["I"] > 0.1).mean() > 0.5  # predicted maps are spatially smooth, not noise
