"""Spatial domains from (measured + predicted) expression: k-means, Leiden, and STAGATE when installed.

Each clusterer turns a section's expression (spots x genes, log1p) into ``k`` domains, k = the
number of labelled domains, and is scored by ARI against the labels (spots without a label are
clustered but not scored), as the HisToSGE paper's Figure 5 does on DLPFC.

- ``kmeans``: ``evaluate.domains_ari``'s clustering (k-means on the top 30 principal
  components); always available, and the benchmark's ``ari`` field.
- ``leiden``: scanpy's standard graph clustering: ``pp.pca`` (30 components), ``pp.neighbors``
  (15 neighbours) and ``tl.leiden`` (igraph's implementation, scanpy's coming default: 2
  iterations, undirected), seeded, at the resolution that gives k clusters, found by the usual
  bisection on the resolution (as in SpaGCN's and STAGATE's tutorials): the resolution is doubled
  from 1 until it gives at least k clusters, then the bracket is halved until it gives exactly k
  (at most ``LEIDEN_STEPS`` clusterings; the closest count if none gives k). Needs ``igraph``.
- ``stagate``: STAGATE (Dong & Zhang, Nat Commun 2022) through the maintained ``stagate-modern``
  package (``pip install "histosge[domains]"``): its graph-attention autoencoder with the
  package's defaults (hidden sizes 512 and 30, 1000 epochs, Adam at 1e-3, weight decay 1e-4,
  gradient clipping 5) on a radius graph of 1.1 spot pitches (150 px on DLPFC, the radius of
  STAGATE's DLPFC tutorial: each spot's six neighbours), then a Gaussian mixture with one shared
  full covariance on the 30-dim embedding. That mixture is scikit-learn's stand-in for the
  tutorial's R ``mclust`` with model EEE (same model; mclust starts from hierarchical
  agglomeration, scikit-learn from k-means). Input: the benchmark's 1000 HVGs (the tutorial:
  3000). Full batch (every spot in each of the 1000 steps, as the package and the paper train);
  its cost is the graph attention's gathered edge tensors and the 1000-gene matrix products, so
  it runs on as many torch threads as the caller sets (``benchmark.run``'s ``threads``; one thread
  per core is the fastest on a machine of its own). Seeded, and identical from run to run with
  the same thread count and deterministic kernels (as ``benchmark.run`` sets them).
- ``stmask``: STMask (the HisToSGE authors' group's dual-channel masked graph autoencoder, the
  paper's third clusterer), built from its paper and code in ``benchmark.stmask``; needs
  torch-geometric (the 'domains' extra). 500 full-batch epochs on 200 principal components.
"""

from __future__ import annotations

import numpy as np

from .. import geometry

CLUSTERERS = ("kmeans", "leiden", "stagate", "stmask")
#: How reports name them.
NAMES = {"kmeans": "k-means", "leiden": "Leiden", "stagate": "STAGATE", "stmask": "STMask"}
#: Most Leiden clusterings the resolution search runs, and its neighbour graph.
LEIDEN_STEPS = 30
LEIDEN_NEIGHBOURS = 15
#: STAGATE's training epochs (the package default), and under ``histosge bench --quick`` (a smoke test).
EPOCHS = 1000
QUICK_EPOCHS = 30
#: STAGATE's graph: spots closer than this many spot pitches are neighbours.
RADIUS_PITCHES = 1.1
INSTALL_HINT = 'pip install "histosge[domains]"'


def stagate_missing() -> str | None:
    """Why STAGATE cannot run here (one line with the fix), or None when it can."""
    try:
        import STAGATE_pyG  # noqa: F401
        import torch_geometric  # noqa: F401
    except ImportError as err:
        return f"STAGATE needs the 'domains' extra ({err.name} is not installed): {INSTALL_HINT}"
    return None


def leiden_missing() -> str | None:
    """Why Leiden cannot run here (one line with the fix), or None when it can."""
    try:
        import igraph  # noqa: F401
    except ImportError:
        return "Leiden needs igraph (python-igraph), which is not installed: pip install igraph"
    return None


def stmask_missing() -> str | None:
    """Why STMask cannot run here (one line with the fix), or None when it can."""
    try:
        import torch_geometric  # noqa: F401
    except ImportError:
        return f"STMask needs the 'domains' extra (torch_geometric is not installed): {INSTALL_HINT}"
    return None


def missing(clusterer: str) -> str | None:
    """Why ``clusterer`` cannot run here, or None (k-means always can)."""
    return {"leiden": leiden_missing, "stagate": stagate_missing, "stmask": stmask_missing}.get(
        clusterer, lambda: None)()


def known(labels) -> np.ndarray:
    """Mask of spots that carry a label."""
    labels = np.asarray(labels, dtype=object)
    return np.array([v is not None and v == v and str(v) != "nan" for v in labels])


def n_domains(labels) -> int:
    labels = np.asarray(labels, dtype=object)
    return len({str(v) for v in labels[known(labels)]})


def ari(labels, clusters: np.ndarray) -> float:
    """ARI of ``clusters`` against ``labels`` over the labelled spots."""
    from sklearn.metrics import adjusted_rand_score

    labels = np.asarray(labels, dtype=object)
    ok = known(labels)
    return float(adjusted_rand_score(labels[ok].astype(str), np.asarray(clusters)[ok]))


def kmeans(expression: np.ndarray, k: int, seed: int = 0, n_pcs: int = 30) -> np.ndarray:
    """The clustering of ``evaluate.domains_ari``: k-means (10 starts) on the top PCs."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    X = np.asarray(expression, np.float64)
    n_pcs = max(1, min(n_pcs, X.shape[0] - 1, X.shape[1]))
    pcs = PCA(n_components=n_pcs, random_state=seed).fit_transform(X - X.mean(0))
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(pcs)


def leiden(expression: np.ndarray, k: int, seed: int = 0, n_pcs: int = 30,
           n_neighbors: int = LEIDEN_NEIGHBOURS) -> np.ndarray:
    """Leiden communities (0..) of the spots' expression at the resolution that gives ``k`` of them.

    scanpy's pca -> neighbors -> leiden, seeded; the resolution is searched by bisection (module
    docstring). Raises ``RuntimeError`` when igraph is missing.
    """
    reason = leiden_missing()
    if reason:
        raise RuntimeError(reason)
    import anndata as ad
    import scanpy as sc

    adata = ad.AnnData(X=np.asarray(expression, np.float32))
    n_pcs = max(1, min(n_pcs, adata.n_obs - 1, adata.n_vars - 1))
    sc.pp.pca(adata, n_comps=n_pcs, random_state=seed)
    sc.pp.neighbors(adata, n_neighbors=min(n_neighbors, adata.n_obs - 1), n_pcs=n_pcs, random_state=seed)

    def run(resolution: float) -> np.ndarray:
        sc.tl.leiden(adata, resolution=resolution, random_state=seed, flavor="igraph", n_iterations=2,
                     directed=False, key_added="leiden")
        return adata.obs["leiden"].astype(int).to_numpy()

    tried: dict[float, np.ndarray] = {}

    def count(resolution: float) -> int:
        tried[resolution] = run(resolution)
        return len(np.unique(tried[resolution]))

    lo, hi = 0.0, 1.0
    while count(hi) < k and len(tried) < LEIDEN_STEPS // 2:
        lo, hi = hi, 2 * hi
    n = len(np.unique(tried[hi]))
    while n != k and len(tried) < LEIDEN_STEPS:
        mid = (lo + hi) / 2
        n = count(mid)
        lo, hi = (mid, hi) if n < k else (lo, mid)
    best = min(tried, key=lambda r: (abs(len(np.unique(tried[r])) - k), r))
    return tried[best]


def stagate(
    expression: np.ndarray,
    xy: np.ndarray,
    k: int,
    seed: int = 0,
    *,
    n_epochs: int | None = None,
    hidden: tuple[int, int] = (512, 30),
    radius: float | None = None,
) -> np.ndarray:
    """STAGATE domains: the autoencoder's embedding, clustered by a tied-covariance Gaussian mixture.

    ``n_epochs``: default ``EPOCHS``. ``xy``: spot centres (any unit); ``radius``: the graph's
    radius in that unit (default ``RADIUS_PITCHES`` x the median nearest-neighbour distance).
    Raises ``RuntimeError`` with the install hint when ``stagate-modern`` is missing.
    """
    reason = stagate_missing()
    if reason:
        raise RuntimeError(reason)
    import anndata as ad
    import STAGATE_pyG
    from sklearn.mixture import GaussianMixture

    xy = np.asarray(xy, np.float64)
    adata = ad.AnnData(X=np.asarray(expression, np.float32))
    adata.obs_names = [f"s{i}" for i in range(adata.n_obs)]
    adata.obsm["spatial"] = xy  # STAGATE reads this key by name
    r = float(radius) if radius else RADIUS_PITCHES * geometry.spot_pitch(xy)
    STAGATE_pyG.Cal_Spatial_Net(adata, rad_cutoff=r, verbose=False)
    STAGATE_pyG.train_STAGATE(adata, hidden_dims=list(hidden), n_epochs=n_epochs or EPOCHS, random_seed=seed,
                              verbose=False, device="cpu")
    emb = np.asarray(adata.obsm["STAGATE"], np.float64)
    return GaussianMixture(n_components=k, covariance_type="tied", random_state=seed).fit_predict(emb)


def cluster(clusterer: str, expression: np.ndarray, xy: np.ndarray, k: int, seed: int = 0, *,
            quick: bool = False) -> np.ndarray:
    """Domain labels (0..k-1) of each spot by ``clusterer`` (one of ``CLUSTERERS``); ``quick``:
    STAGATE and STMask train ``QUICK_EPOCHS`` epochs (a smoke test, not a measurement)."""
    if clusterer == "kmeans":
        return kmeans(expression, k, seed)
    if clusterer == "leiden":
        return leiden(expression, k, seed)
    if clusterer == "stagate":
        return stagate(expression, xy, k, seed, n_epochs=QUICK_EPOCHS if quick else None)
    if clusterer == "stmask":
        from . import stmask

        reason = stmask_missing()
        if reason:
            raise RuntimeError(reason)
        return stmask.cluster(expression, xy, k, seed, epochs=QUICK_EPOCHS if quick else None)
    raise ValueError(f"unknown clusterer {clusterer!r}; known: {', '.join(CLUSTERERS)}")
