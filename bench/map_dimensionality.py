"""Are image-only maps one-dimensional? The share of predicted variance on the first principal
component against the measured data's, and what the image mode's options change.

    python bench/map_dimensionality.py --data ../shared/data --out bench/results/map_dimensionality.json

An image-mode model of her2st C2 + C3 predicts C4 from its H&E slide (each measured spot takes
the nearest virtual spot) and from its measured spots' own patches (protocol X). Per variant:
held-out pcc, pcc_top50 and MSE on C4's measured spots (the benchmark's scores), the share of
the predictions' total variance on their first principal component (PCA of the log1p values,
centred, not scaled: what a map shows), the same share of the measured values, and the mean
correlation across spots between the maps of GRB7, SCGB2A2 and MGP (markers of different
compartments: tumour, luminal secretory, stroma) predicted and measured.

Variants: the default; more of the gene-wise image term outside the top components
(``outside_weight`` 1.0); more components (``n_components`` 30); no ring of neighbours (``ring``
1) and a wider one (19); and, after prediction, each gene's deviation from its training mean
scaled by its ``cv_pcc`` (shrinkage toward the mean of genes the model cannot tell apart), and
the predictions whitened: their principal components rescaled to the spectrum of the training
sections' measured expression (the first 30).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

import histosge
from histosge import tasks
from histosge.evaluate import score
from histosge.genes import log_normalize
from histosge.model import HisToSGE

MARKERS = ("GRB7", "SCGB2A2", "MGP")
VARIANTS = {"default": {}, "outside_weight 1.0": {"outside_weight": 1.0}, "n_components 30": {"n_components": 30},
            "ring 1": {"ring": 1}, "ring 19": {"ring": 19}}


def pc1_share(values: np.ndarray) -> float:
    """Share of the total variance (genes' variances summed) on the first principal component."""
    x = np.asarray(values, np.float64)
    x = x - x.mean(0)
    s = np.linalg.svd(x, compute_uv=False) ** 2
    return float(s[0] / s.sum()) if s.sum() > 0 else float("nan")


def marker_r(values: np.ndarray, genes: list[str]) -> float | None:
    idx = [genes.index(g) for g in MARKERS if g in genes]
    if len(idx) < 2:
        return None
    r = np.corrcoef(np.asarray(values, np.float64)[:, idx].T)
    return float(np.mean(r[np.triu_indices(len(idx), 1)]))


def describe(y: np.ndarray, pred: np.ndarray, genes: list[str]) -> dict:
    s = score(y, pred)
    out = {"pcc": s["pcc"], "pcc_top50": s["pcc_top50"], "mse": s["mse"], "pc1_share_predicted": pc1_share(pred),
           "pc1_share_measured": pc1_share(y), "marker_r_predicted": marker_r(pred, genes),
           "marker_r_measured": marker_r(y, genes)}
    return {k: None if v is None else round(float(v), 4) for k, v in out.items()}


def shrink_by_cv(model, pred: np.ndarray) -> np.ndarray:
    """Each gene's deviation from its training mean, scaled by its cv_pcc (0 where it is <= 0)."""
    mean = model.method_.pca_.mean[None, :]
    return np.maximum(mean + (pred - mean) * np.clip(model.reliability_.cv_pcc, 0, 1)[None, :], 0)


def whiten(pred: np.ndarray, measured_train: np.ndarray, k: int = 30) -> np.ndarray:
    """The predictions' principal components (over the predicted spots) rescaled so that their
    variances follow the training sections' measured spectrum: the first component no longer
    holds 90% of the variance."""
    x = np.asarray(pred, np.float64)
    mean = x.mean(0)
    u, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    m = np.asarray(measured_train, np.float64)
    sm = np.linalg.svd(m - m.mean(0), compute_uv=False) * np.sqrt(len(x) / len(m))
    k = min(k, len(s), len(sm))
    scale = np.ones_like(s)
    scale[:k] = sm[:k] / np.maximum(s[:k], 1e-12) * (s[0] / sm[0])  # keep the first component's size
    return np.maximum(mean + (u * (s * scale)) @ vt, 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("HISTOSGE_DATA", "../shared/data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = [histosge.read_section(s, data_dir=args.data) for s in ("her2st:C2", "her2st:C3")]
        c4 = histosge.read_section("her2st:C4", data_dir=args.data)
    slide = str(Path(args.data) / "slides" / "her2st_C4.ome.tif")
    xy = np.asarray(c4.obsm["spatial"], np.float64)
    rows = {}
    for name, params in VARIANTS.items():
        model = HisToSGE("image", seed=args.seed, **params).fit(train, progress=False)
        genes = [g for g in model.genes_ if g in set(c4.var_names)]
        y_train = np.vstack([log_normalize(t, model.genes_) for t in train])
        cols = [model.genes_.index(g) for g in genes]
        y = log_normalize(c4, genes)
        sl = tasks.predict(model, slide, progress=False)
        _, idx = cKDTree(np.asarray(sl.obsm["spatial"])).query(xy)
        preds = {"slide": np.asarray(sl.X)[idx], "X": np.asarray(tasks.predict(model, c4, progress=False).X)}
        for where, pred in preds.items():
            rows[f"{name}, {where}"] = describe(y, pred[:, cols], genes)
            if name == "default":
                rows[f"default + shrunk by cv_pcc, {where}"] = describe(y, shrink_by_cv(model, pred)[:, cols], genes)
                rows[f"default + whitened, {where}"] = describe(y, whiten(pred, y_train)[:, cols], genes)
        print(name, rows[f"{name}, slide"], flush=True)
    result = {"train": "her2st:C2,her2st:C3", "target": "her2st:C4", "seed": args.seed, "markers": list(MARKERS),
              "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    cols_ = ("pcc", "pcc_top50", "mse", "pc1_share_predicted", "pc1_share_measured", "marker_r_predicted",
             "marker_r_measured")
    print(f"{'':40s} " + " ".join(f"{c[:14]:>14s}" for c in cols_))
    for name, r in rows.items():
        print(f"{name:40s} " + " ".join(f"{'-' if r[c] is None else format(r[c], 'g'):>14s}" for c in cols_))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
