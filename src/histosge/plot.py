"""Gene maps: each gene measured next to predicted, over the section's H&E.

One function for every command's ``--plot``: ``gene_maps``. Which genes, when none are named:
the genes the user named for the model, else the tissue's known markers (``datasets.Dataset.
markers`` of the datasets the model was trained on) that the model predicts reliably, else the
most reliable genes (``var['cv_pcc']``). Each panel is coloured over the 1st-99th percentile of the
values it shows (image-only predictions lie in a narrow band far from 0: a scale from 0 made every
gene look alike), and titled with the gene's cv_pcc, so a map is read with its trust.
"""

from __future__ import annotations

import os

import anndata as ad
import numpy as np

from . import keys
from ._atomic import atomic_path
from .geometry import spot_pitch


def default_genes(adata: ad.AnnData, n: int = 3) -> list[str]:
    """The genes ``--plot`` draws when none are named (see the module docstring).

    Parameters
    ----------
    adata : AnnData
        An output of ``superres``, ``recover`` or ``predict`` (``uns['histosge']['gene_choice']``,
        ``var['cv_pcc']``, ``var['reliable']``).
    n : int
        How many genes, at most.

    Returns
    -------
    list of str
        Named genes first (all of them, up to 6), else reliable tissue markers, topped up with
        the most reliable genes (the most variable when nothing is reliable or estimated).
    """
    from .datasets import get_dataset

    info = adata.uns.get("histosge", {})
    choice = info.get("gene_choice", {}) or {}
    named = [str(g) for g in choice.get("named", []) if g in adata.var_names]
    if named:
        return named[:6]
    names = list(map(str, adata.var_names))
    cv = adata.var["cv_pcc"].to_numpy(np.float64) if "cv_pcc" in adata.var else np.full(len(names), np.nan)
    reliable = adata.var["reliable"].to_numpy(bool) if "reliable" in adata.var else np.zeros(len(names), bool)
    datasets = list(choice.get("datasets", []) or [])
    if not datasets and (info.get("input") or {}).get("dataset"):
        datasets = [info["input"]["dataset"]]
    markers = [m for d in datasets if get_dataset(d) is not None for m in get_dataset(d).markers]
    index = {g: i for i, g in enumerate(names)}
    found = [m for m in dict.fromkeys(markers) if m in index and reliable[index[m]]][:n]
    if np.isfinite(cv).any():
        order = np.argsort(-np.nan_to_num(cv, nan=-np.inf), kind="stable")
    else:
        X = adata.layers["predicted"] if "predicted" in adata.layers else adata.X
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        order = np.argsort(-X.var(0), kind="stable")
    for i in order:
        if len(found) >= n:
            break
        if names[i] not in found:
            found.append(names[i])
    return found


def dot_size(ax, spot_spacing: float, fill: float = 0.8) -> float:
    """Marker area (points^2) whose diameter is ``fill`` x ``spot_spacing`` (data units) on ``ax``.

    Why: a fixed size drew 9x and 16x spots as specks that the H&E behind them hid; sized to
    the spacing, every density covers the tissue the same way. Needs the axes limits set.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes, with limits and aspect set.
    spot_spacing : float
        Centre-to-centre spot distance in data units.
    fill : float
        Dot diameter as a fraction of the spacing.

    Returns
    -------
    float
        The ``s`` argument of ``ax.scatter`` (20 when the spacing is not finite).
    """
    if not np.isfinite(spot_spacing):
        return 20.0
    box = ax.get_position()
    fig_w, fig_h = ax.figure.get_size_inches() * 72  # points
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    per_unit = min(box.width * fig_w / abs(x1 - x0), box.height * fig_h / abs(y1 - y0))  # equal aspect
    return float(max(0.5, (fill * spot_spacing * per_unit) ** 2))


def _background(adata: ad.AnnData):
    """(image, scale) of the best image stored in uns['spatial'], or (None, 1)."""
    lib = keys.info(adata).get("library_id")
    spatial = adata.uns.get(keys.SPATIAL, {})
    entry = spatial.get(lib) if lib in spatial else (next(iter(spatial.values())) if spatial else None)
    if not entry:
        return None, 1.0
    for key in ("hires", "lowres"):
        img = entry.get("images", {}).get(key)
        if img is not None:
            return np.asarray(img), float(entry["scalefactors"][f"tissue_{key}_scalef"])
    return None, 1.0


def _panels(adata: ad.AnnData, measured: ad.AnnData | None):
    """(left, right) panels: each (spot mask, values-of-gene function, title), left None when no
    measured spots exist; and the coordinates of both."""
    info = adata.uns.get("histosge", {})
    task = info.get("task")
    xy = np.asarray(adata.obsm[keys.SPATIAL], np.float64)
    everywhere = np.ones(adata.n_obs, bool)

    def column(values):
        return lambda j: np.asarray(values[:, j].toarray() if hasattr(values, "toarray") else values[:, j]).ravel()

    if task == "recover":
        held = (adata.obs["split"] == "held-out").to_numpy()
        return ((held, column(adata.X), "measured (held-out spots)", xy),
                (held, column(adata.layers["predicted"]), "predicted (held-out spots)", xy))
    if task == "superres":
        meas = (adata.obs["spot_type"] == "measured").to_numpy()
        return ((meas, column(adata.X), "measured spots", xy),
                (everywhere, column(adata.X), f"measured + generated spots ({info.get('factor', 4)}x)", xy))
    right = (everywhere, column(adata.X), "predicted", xy)
    if measured is None:
        return None, right
    from .genes import log_normalize

    genes = [g for g in adata.var_names if g in set(measured.var_names)]
    values = np.full((measured.n_obs, adata.n_vars), np.nan, np.float32)
    if genes:
        values[:, adata.var_names.get_indexer(genes)] = log_normalize(measured, genes)
    m_xy = np.asarray(measured.obsm[keys.SPATIAL], np.float64)
    return (np.ones(measured.n_obs, bool), column(values), "measured", m_xy), right


def gene_maps(adata: ad.AnnData, path: str | os.PathLike, *, genes: list[str] | None = None,
              measured: ad.AnnData | None = None, n: int = 3) -> list[str]:
    """Write a PNG: one row per gene, measured next to predicted where measured spots exist.

    ``superres``: measured spots | measured + generated; ``recover``: held-out spots measured |
    predicted; ``predict`` on a section: the section's measured spots (``measured``) | the
    prediction; ``predict`` on a slide: the prediction alone. Each panel's colours span the
    1st-99th percentile of its values; titles give each gene's cv_pcc.

    Parameters
    ----------
    adata : AnnData
        An output of ``superres``, ``recover`` or ``predict``.
    path : str or path
        The PNG to write (atomically).
    genes : list of str, optional
        Genes to draw; default :func:`default_genes`.
    measured : AnnData, optional
        For a ``predict`` output: the section with its counts, drawn beside the prediction.
    n : int
        Genes drawn when ``genes`` is not given.

    Returns
    -------
    list of str
        The genes drawn.

    Raises
    ------
    InputError
        A gene the output does not hold.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .errors import InputError

    genes = list(genes) if genes else default_genes(adata, n)
    missing = [g for g in genes if g not in adata.var_names]
    if missing or not genes:
        raise InputError(f"genes not predicted here: {', '.join(missing) or '(none given)'}", where="--plot",
                         fix=f"choose among the predicted genes, e.g. {', '.join(map(str, adata.var_names[:5]))}")
    left, right = _panels(adata, measured)
    panels = [p for p in (left, right) if p is not None]
    img, scale = _background(adata)
    all_xy = np.vstack([p[3] for p in panels]) * scale
    cv = adata.var["cv_pcc"] if "cv_pcc" in adata.var else None
    fig, axes = plt.subplots(len(genes), len(panels), figsize=(4.2 * len(panels), 3.8 * len(genes)), squeeze=False)
    spacings = [spot_pitch(p[3][p[0]] * scale) for p in panels]
    for row, gene in enumerate(genes):
        j = adata.var_names.get_loc(gene)
        trust = f"cv_pcc {float(cv.iloc[j]):.2f}" if cv is not None and np.isfinite(cv.iloc[j]) else "cv_pcc n/a"
        for col, panel in enumerate(panels):
            mask, values_of, title, xy = panel
            vals, xy = values_of(j)[mask], xy[mask] * scale
            ax = axes[row, col]
            if img is not None:
                ax.imshow(img)
            ax.set_title(f"{gene} ({trust})\n{title}", fontsize=9)
            ax.set_aspect("equal")
            ax.axis("off")
            ax.set_xlim(all_xy[:, 0].min() - 10, all_xy[:, 0].max() + 10)
            ax.set_ylim(all_xy[:, 1].max() + 10, all_xy[:, 1].min() - 10)  # image rows grow downwards
            ok = np.isfinite(vals)
            if not ok.any():
                ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", va="center")
                continue
            # Each panel on the robust range of its own values: a prediction spans a narrower band
            # than the measurement, and on a shared scale its pattern vanished.
            lo, hi = np.percentile(vals[ok], [1, 99])
            hi = hi if hi > lo else lo + 1e-3
            sc = ax.scatter(xy[ok, 0], xy[ok, 1], c=vals[ok], s=dot_size(ax, spacings[col]), cmap="magma",
                            vmin=lo, vmax=hi, linewidths=0)
            fig.colorbar(sc, ax=ax, shrink=0.7, label="log1p (1st-99th pct)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
    return genes
