"""The model's hand-assembled pieces next to scikit-learn's ready-made ones, on real sections.

Why (issue 20.5): where a well-kept library already does a piece, use it, *measured*. The model
fits with scikit-learn already (``PCA``, ``RidgeCV``, ``KMeans``) but keeps only plain arrays, so a
model file holds numbers and never a pickled object. This script fits each piece both ways on
the benchmark's inputs (he-stats features, the top expression components of the 1000 HVGs,
protocol R's training half, seed 0) and prints the largest difference of their predictions:

- the image probe: ``Projector`` + ``RidgeHead.fit_cv`` (clip to the training range, standardise,
  PCA, RidgeCV) vs ``Pipeline(MinMaxScaler(clip=True), StandardScaler(), PCA(), RidgeCV())``;
- the stacking: ``scipy.optimize.nnls`` per component (``contexts.Blend``) vs
  ``LinearRegression(positive=True, fit_intercept=False)`` on the same centred inputs;
- the out-of-fold image scores: ``contexts.image_oof`` vs ``cross_val_predict`` with the same
  folds (``PredefinedSplit``).

    python bench/sklearn_equivalence.py --data ../shared/data --out bench/results/sklearn_equivalence.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from scipy.optimize import nnls
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, RidgeCV
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from histosge.benchmark import protocols as P
from histosge.benchmark import sections as S
from histosge.genes import log_normalize, select_hvgs
from histosge.model.contexts import image_oof
from histosge.model.parts import RIDGE_ALPHAS, LinearPCA, Projector, RidgeHead


def _probe_pipeline(n_pcs: int):
    return make_pipeline(MinMaxScaler(clip=True), StandardScaler(), PCA(n_pcs, svd_solver="full"),
                         RidgeCV(alphas=RIDGE_ALPHAS))


def compare(sec: S.Section, seed: int = 0, n_components: int = 16) -> dict:
    split = P.split_r(sec.n, seed)
    tr, te = split.train, split.test
    genes, _ = select_hvgs(sec.adata, 1000, train_mask=np.isin(np.arange(sec.n), tr))
    y = log_normalize(sec.adata, genes)
    pca = LinearPCA.fit(y[tr], n_components, seed=seed)
    z = pca.transform(y[tr]).astype(np.float32)
    x_tr, x_te = sec.features[tr], sec.features[te]

    out: dict = {"section": sec.name, "n_train": int(len(tr)), "n_query": int(len(te))}
    # 1. the probe
    t = time.perf_counter()
    proj = Projector.fit(x_tr)
    ours = RidgeHead.fit_cv(proj(x_tr), z).predict(proj(x_te))
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    theirs = _probe_pipeline(proj.n_pcs).fit(x_tr, z).predict(x_te)
    t_theirs = time.perf_counter() - t
    out["probe"] = {"max_abs_diff": float(np.abs(ours - theirs).max()), "scale": float(np.abs(ours).max()),
                    "seconds_ours": round(t_ours, 3), "seconds_sklearn": round(t_theirs, 3)}
    # 2. the stacking (non-negative least squares on centred inputs, per component)
    rng = np.random.default_rng(seed)
    a_inputs = [z + rng.normal(0, 1, z.shape), 0.5 * z + rng.normal(0, 2, z.shape), -z + rng.normal(0, 1, z.shape)]
    diffs = []
    for j in range(z.shape[1]):
        a = np.column_stack([x[:, j] for x in a_inputs]).astype(np.float64)
        a -= a.mean(0)
        b = z[:, j] - z[:, j].mean()
        w_ours, _ = nnls(a, b)
        w_theirs = LinearRegression(positive=True, fit_intercept=False).fit(a, b).coef_
        diffs.append(float(np.abs(w_ours - w_theirs).max()))
    out["stack"] = {"max_abs_weight_diff": max(diffs)}
    # 3. out-of-fold image scores
    folds = 5
    fold = np.random.default_rng(seed).permutation(len(x_tr)) % folds
    ours = image_oof(x_tr, z, seed, folds)
    n_pcs = min(256, len(x_tr) - len(x_tr) // folds - 2, x_tr.shape[1])
    theirs = cross_val_predict(_probe_pipeline(n_pcs), x_tr, z, cv=PredefinedSplit(fold))
    out["out_of_fold"] = {"max_abs_diff": float(np.abs(ours - theirs).max()), "scale": float(np.abs(ours).max())}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("HISTOSGE_DATA", "../shared/data"))
    ap.add_argument("--sections", default="her2st:C3,dlpfc:151673")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    names = args.sections.split(",")
    secs = S.load(names, args.data, progress=False)
    rows = [compare(secs[n]) for n in names]
    for r in rows:
        print(json.dumps(r), file=sys.stderr)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"rows": rows}, fh, indent=1)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
