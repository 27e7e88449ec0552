"""Marker-gene maps: measured spots next to generated (or held-out predicted) spots."""

from __future__ import annotations

import os

import anndata as ad
import numpy as np

from . import keys
from ._atomic import atomic_path
from .geometry import spot_pitch

#: Well-known markers tried first (DLPFC layers, white matter, neurons; HER2+ breast cancer).
KNOWN_MARKERS = ("MOBP", "PCP4", "SNAP25", "MBP", "NRGN", "ERBB2", "GRB7", "KRT19", "COL1A1", "CD74",
                 "Mbp", "Plp1", "Snap25", "Pcp4")


def pick_markers(adata: ad.AnnData, n: int = 3, genes: list[str] | None = None) -> list[str]:
    """The genes to draw: those asked for, else known markers, else the most variable.

    Parameters
    ----------
    adata : AnnData
        An output of ``superres``, ``recover`` or ``predict``.
    n : int
        How many markers to pick when ``genes`` is not given.
    genes : list of str, optional
        Genes asked for; those in ``adata`` are kept (at most 4).

    Returns
    -------
    list of str
        ``genes`` that exist, else ``KNOWN_MARKERS`` found among the genes, topped up with the
        most variable genes.
    """
    if genes:
        return [g for g in genes if g in adata.var_names][:4]
    found = [g for g in KNOWN_MARKERS if g in adata.var_names][:n]
    if len(found) < n:
        X = np.asarray(adata.X)
        extra = [adata.var_names[i] for i in np.argsort(-X.var(0)) if adata.var_names[i] not in found]
        found += extra[: n - len(found)]
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


def markers(adata: ad.AnnData, path: str | os.PathLike, *, genes: list[str] | None = None, n: int = 3) -> list[str]:
    """Write a PNG of marker genes: measured spots left, generated/predicted right.

    Works on the output of ``superres`` (measured vs generated) and ``recover`` (measured
    held-out spots vs their prediction), over the section's H&E.

    Parameters
    ----------
    adata : AnnData
        An output of ``superres`` or ``recover`` (``uns['histosge']['task']`` tells which).
    path : str or path
        The PNG to write (atomically).
    genes : list of str, optional
        Genes to draw; default :func:`pick_markers`.
    n : int
        Markers drawn when ``genes`` is not given, one row each.

    Returns
    -------
    list of str
        The genes drawn.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    genes = pick_markers(adata, n, genes)
    info = adata.uns.get("histosge", {})
    if info.get("task") == "recover":
        left = right = (adata.obs["split"] == "held-out").to_numpy()
        titles = ("measured (held-out spots)", "predicted (held-out spots)")
        left_vals, right_vals = adata.X, adata.layers["predicted"]
    else:
        left = (adata.obs["spot_type"] == "measured").to_numpy()
        right = np.ones(adata.n_obs, bool)
        titles = ("measured spots", f"measured + generated spots ({info.get('factor', 4)}x)")
        left_vals = right_vals = adata.X
    img, scale = _background(adata)
    xy = np.asarray(adata.obsm[keys.SPATIAL]) * scale
    fig, axes = plt.subplots(len(genes), 2, figsize=(8, 3.6 * len(genes)), squeeze=False)
    spacings = (spot_pitch(xy[left]), spot_pitch(xy[right]))  # the same for every gene
    for row, gene in enumerate(genes):
        j = adata.var_names.get_loc(gene)
        lv = np.asarray(left_vals[:, j]).ravel()
        rv = np.asarray(right_vals[:, j]).ravel()
        vmax = float(np.percentile(np.concatenate([lv[left], rv[right]]), 99)) or 1.0
        for col, (mask, vals, title) in enumerate(((left, lv, titles[0]), (right, rv, titles[1]))):
            ax = axes[row, col]
            if img is not None:
                ax.imshow(img)
            ax.set_title(f"{gene}: {title}", fontsize=9)
            ax.set_aspect("equal")
            ax.axis("off")
            pad = 10
            ax.set_xlim(xy[:, 0].min() - pad, xy[:, 0].max() + pad)
            ax.set_ylim(xy[:, 1].max() + pad, xy[:, 1].min() - pad)  # image rows grow downwards
            sc = ax.scatter(xy[mask, 0], xy[mask, 1], c=vals[mask], s=dot_size(ax, spacings[col]), cmap="magma",
                            vmin=0, vmax=vmax, linewidths=0)
        fig.colorbar(sc, ax=axes[row].tolist(), shrink=0.7, label="log1p expression")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
    return genes


def heatmaps(adata: ad.AnnData, path: str | os.PathLike, genes: list[str], *, columns: int = 3) -> list[str]:
    """Write a PNG of predicted expression: one panel per gene over the H&E thumbnail.

    For the output of ``histosge predict`` (a slide or a section). Genes the model does not
    predict are an error before anything is drawn.

    Parameters
    ----------
    adata : AnnData
        An output of ``predict``.
    path : str or path
        The PNG to write (atomically).
    genes : list of str
        Genes to draw, one panel each.
    columns : int
        Panels per row.

    Returns
    -------
    list of str
        The genes drawn.

    Raises
    ------
    InputError
        No gene given, or a gene the model does not predict.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from .errors import InputError

    missing = [g for g in genes if g not in adata.var_names]
    if missing or not genes:
        raise InputError(f"genes not predicted by this model: {', '.join(missing) or '(none given)'}",
                         where="--plot", fix=f"choose among the model's genes, e.g. {', '.join(adata.var_names[:5])}")
    img, scale = _background(adata)
    xy = np.asarray(adata.obsm[keys.SPATIAL]) * scale
    n_cols = min(columns, len(genes))
    n_rows = int(np.ceil(len(genes) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 4.0 * n_rows), squeeze=False)
    spacing = spot_pitch(xy)
    for ax in axes.ravel()[len(genes):]:
        ax.axis("off")
    for ax, gene in zip(axes.ravel(), genes, strict=False):
        vals = np.asarray(adata[:, gene].X).ravel()
        if img is not None:
            ax.imshow(img)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_xlim(xy[:, 0].min() - 10, xy[:, 0].max() + 10)
        ax.set_ylim(xy[:, 1].max() + 10, xy[:, 1].min() - 10)
        sc = ax.scatter(xy[:, 0], xy[:, 1], c=vals, s=dot_size(ax, spacing), cmap="magma",
                        vmin=0, vmax=float(np.percentile(vals, 99)) or 1.0, linewidths=0)
        ax.set_title(f"{gene} (predicted)", fontsize=9)
        fig.colorbar(sc, ax=ax, shrink=0.7, label="log1p")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
    return list(genes)
