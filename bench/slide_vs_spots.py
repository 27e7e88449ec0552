"""Predicting an H&E-only whole slide, scored against the spots measured on it.

Why: ``histosge predict MODEL SLIDE`` lays its own lattice of virtual spots on the tissue of a
slide that has no spatial data. ``slides/her2st_C4.ome.tif`` is her2st C4's H&E exported as a
whole-slide image, pixel-aligned with C4's measured spots, so that path can be scored: each
measured spot is compared with the nearest virtual spot. Printed next to protocol X's score for
C4 (the same model predicting C4's measured spots from their own patches), it shows what the
slide path costs: the lattice is the model's, not the section's.

    python bench/slide_vs_spots.py --data ../shared/data --out bench/results/slide_vs_spots.json

Steps, all through the public API (what ``histosge train`` and ``histosge predict`` run):
fit ``HisToSGE("image")`` on her2st C2 + C3, save, load, predict (a) C4's measured spots
(protocol X) and (b) the slide at the training pitch (200 um) and 4x denser (100 um). Scores
on the model's genes that C4 measures: mean per-gene Pearson over the spots (pcc), over the 50
most variable genes (pcc_top50), and MSE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
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


def _scores(y, pred):
    s = score(y, pred)
    return {k: round(float(s[k]), 4) for k in ("pcc", "pcc_top50", "mse")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("HISTOSGE_DATA", "../shared/data"))
    ap.add_argument("--train", default="her2st:C2,her2st:C3")
    ap.add_argument("--target", default="her2st:C4")
    ap.add_argument("--slide", default=None, help="default: <data>/slides/her2st_C4.ome.tif")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    slide = args.slide or str(Path(args.data) / "slides" / "her2st_C4.ome.tif")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = [histosge.read_section(s, data_dir=args.data) for s in args.train.split(",")]
        target = histosge.read_section(args.target, data_dir=args.data)
    model = HisToSGE("image", seed=args.seed).fit(train, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.histosge"
        model.save(path)
        model = HisToSGE.load(path)
    genes = [g for g in model.genes_ if g in set(target.var_names)]
    cols = [model.genes_.index(g) for g in genes]
    y = log_normalize(target, genes)
    rows = {}
    x_pred = tasks.predict(model, target, progress=False)
    rows["X (C4's measured spots, their own patches)"] = {**_scores(y, np.asarray(x_pred.X)[:, cols]),
                                                          "n_spots": int(target.n_obs)}
    xy = np.asarray(target.obsm["spatial"], np.float64)
    mpp = float(model.pitch_um_ / histosge.geometry.spot_pitch(xy))  # C4's own scale, for distances in um
    for factor in (None, 4):
        out = tasks.predict(model, slide, factor=factor, progress=False)
        dist, idx = cKDTree(np.asarray(out.obsm["spatial"])).query(xy)
        pitch = out.uns["histosge"]["pitch_um"]
        rows[f"slide, virtual spots {pitch:g} um apart (nearest to each measured spot)"] = {
            **_scores(y, np.asarray(out.X)[idx][:, cols]), "n_virtual_spots": int(out.n_obs),
            "median_distance_um": round(float(np.median(dist)) * mpp, 1),
            "novel_fraction": round(float(out.obs["novel"].mean()), 4),
        }
    result = {"train": args.train, "target": args.target, "slide": slide, "n_genes_scored": len(genes),
              "model_genes": len(model.genes_), "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    print(f"{'':72s} {'pcc':>7s} {'top50':>7s} {'mse':>7s}")
    for name, r in rows.items():
        print(f"{name:72s} {r['pcc']:7.3f} {r['pcc_top50']:7.3f} {r['mse']:7.4f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
