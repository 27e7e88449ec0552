"""Other neighbour contexts and stackings for the default ``histosge`` model (protocols R and G).

Why: docs/MODEL_NOTES.md section 15 reports ideas measured in the fifth session and not kept;
this script is the repo command behind that table. It reads sections, splits, genes and scores
exactly as ``histosge bench`` does and rebuilds the default model's prediction from the
library's own parts (``model.neighbours``, ``model.contexts.image_oof`` / ``Blend``, the probe), with one
part swapped per variant. The correction network is left out: within a section it is never
kept on ``he-stats`` features (section 12), so the default's prediction is its context plus
the image terms. ``--check`` confirms that on the first row against the model (``HisToSGE``) itself.

    python bench/context_variants.py --data ../shared/data --seeds 0,1,2 \
        --out bench/results/model_variants/context_variants.json

Variants (each the default with one change):

- ``kriging``: per-component Gaussian-process interpolation (Matern 3/2 kernel) instead of IDW,
  lengthscale and noise per component by closed-form leave-one-out error;
- ``k-per-component``: IDW with its own leave-one-out k for each component;
- ``bilateral``: IDW weights times a Gaussian of the distance between two spots' IDW contexts
  (edge-preserving smoothing), width by leave-one-out error;
- ``convex-stack``: neighbour and image weights that sum to one (instead of free non-negative);
- ``centred-oof``: the image's out-of-fold predictions fitted on targets centred by the mean of
  *all* training spots (removes the fold-mean anti-correlation on ~50-spot sections);
- ``knn-mix0.25`` / ``knn-mix0.5``: the default averaged with the knn baseline (for ARI).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist
from sklearn.linear_model import RidgeCV

from histosge.benchmark import deterministic
from histosge.benchmark import sections as S
from histosge.geometry import spot_pitch
from histosge.methods import create_method
from histosge.model import HisToSGE
from histosge.model.contexts import Blend, image_oof
from histosge.model.neighbours import choose_k, idw, idw_weights
from histosge.model.parts import RIDGE_ALPHAS, LinearPCA, Projector
from histosge.model.probe import ridge_probe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_variants import _means, _print, _record, base_parser, rows  # noqa: E402

VARIANTS = ("default", "kriging", "k-per-component", "bilateral", "convex-stack", "centred-oof",
            "knn-mix0.25", "knn-mix0.5")
#: Kriging grid: lengthscales in units of the training spots' median nearest-neighbour spacing,
#: noise as a fraction of the kernel's unit variance.
LENGTHSCALES = (0.75, 1, 1.5, 2, 3, 4, 6, 8, 12, 16)
NOISES = tuple(float(s) for s in np.logspace(-2, 2.5, 19))
#: Bilateral smoothing: neighbours considered, and widths relative to the contexts' spread.
BILATERAL_K = 128
BILATERAL_WIDTHS = (0.1, 0.2, 0.4, 0.8, 1.6)
#: The default model's settings (n_components, outside_weight, image_blend): its method's defaults.
DEFAULT = create_method("histosge")


def _matern32(d: np.ndarray, lengthscale: float) -> np.ndarray:
    s = np.sqrt(3.0) * d / lengthscale
    return (1.0 + s) * np.exp(-s)


def kriging(train_xy, z, query_xy):
    """Per-column GP posterior mean (constant mean = training mean); returns (query, leave-one-out)."""
    train_xy, query_xy, z = (np.asarray(a, np.float64) for a in (train_xy, query_xy, z))
    mu = z.mean(0)
    zc = z - mu
    spacing = spot_pitch(train_xy)
    d = cdist(train_xy, train_xy)
    best = [(np.inf, None)] * z.shape[1]
    for ls in LENGTHSCALES:
        s, u = np.linalg.eigh(_matern32(d, ls * spacing))
        s = np.maximum(s, 0.0)
        uy, u2 = u.T @ zc, u * u
        for noise in NOISES:
            inv = 1.0 / (s + noise)
            # Leave-one-out residual of a GP: [K^-1 y]_i / [K^-1]_ii.
            err = ((u @ (uy * inv[:, None]) / (u2 @ inv)[:, None]) ** 2).mean(0)
            best = [(e, (ls, noise)) if e < b[0] else b for e, b in zip(err, best, strict=True)]
    query, loo = np.empty((len(query_xy), z.shape[1])), np.empty_like(z)
    for ls, noise in {b[1] for b in best}:
        cols = [j for j, b in enumerate(best) if b[1] == (ls, noise)]
        k_inv = np.linalg.inv(_matern32(d, ls * spacing) + noise * np.eye(len(d)))
        alpha = k_inv @ zc[:, cols]
        query[:, cols] = _matern32(cdist(query_xy, train_xy), ls * spacing) @ alpha + mu[cols]
        loo[:, cols] = z[:, cols] - alpha / np.diag(k_inv)[:, None]
    return query.astype(np.float32), loo.astype(np.float32)


def _bilateral(train_xy, z, query_xy, guide_train, guide_query, width, exclude_self):
    k = min(BILATERAL_K + int(exclude_self), len(train_xy))
    dist, idx = cKDTree(train_xy).query(query_xy, k=k)
    if exclude_self:
        dist, idx = dist[:, 1:], idx[:, 1:]
    gap = ((guide_query[:, None, :] - guide_train[idx]) ** 2).sum(-1)
    log_w = np.log(idw_weights(dist)) - gap / (2.0 * width**2)
    w = np.exp(log_w - log_w.max(1, keepdims=True))  # in log space: no row underflows to all zeros
    w /= w.sum(1, keepdims=True)
    return np.einsum("qk,qkc->qc", w, z[idx]).astype(np.float32)


def bilateral(train_xy, z, query_xy, k):
    """Edge-preserving IDW: a neighbour counts less the more its context differs from the query's."""
    guide_train = idw(train_xy, z, train_xy, k, exclude_self=True)
    guide_query = idw(train_xy, z, query_xy, k)
    spread = float(np.sqrt(((guide_train - guide_train.mean(0)) ** 2).sum(1).mean()))
    errors = {}
    for rel in BILATERAL_WIDTHS:
        loo = _bilateral(train_xy, z, train_xy, guide_train, guide_train, rel * spread, True)
        errors[rel] = float(((loo - z) ** 2).mean())
    rel = min(errors, key=errors.get)
    return (_bilateral(train_xy, z, query_xy, guide_train, guide_query, rel * spread, False),
            _bilateral(train_xy, z, train_xy, guide_train, guide_train, rel * spread, True))


def _centred_oof(f_train, z, seed, folds=5):
    """``contexts.image_oof`` with every fold fitted on targets centred by the mean of all
    training spots (same folds), so a fold's own mean cannot pull its predictions away."""
    fold = np.random.default_rng(seed).permutation(len(f_train)) % folds
    out = np.zeros_like(z)
    p_train = Projector.fit(f_train)(f_train)
    mu = z.mean(0)
    for k in range(folds):
        held = fold == k
        reg = RidgeCV(alphas=RIDGE_ALPHAS, fit_intercept=False).fit(p_train[~held], z[~held] - mu)
        out[held] = reg.predict(p_train[held]) + mu
    return out


def _convex_blend(knn_train, img_train, knn_query, img_query, z):
    """``contexts.Blend`` with the two weights summing to one (w, 1 - w; w in [0, 1]); query side."""
    out = np.empty_like(knn_query)
    for j in range(z.shape[1]):
        a = np.column_stack([knn_train[:, j], img_train[:, j]]).astype(np.float64)
        aq = np.column_stack([knn_query[:, j], img_query[:, j]]).astype(np.float64)
        mu, t = a.mean(0), z[:, j] - z[:, j].mean()
        ac = a - mu
        gap = ac[:, 0] - ac[:, 1]
        w = float(np.clip(gap @ (t - ac[:, 1]) / max(gap @ gap, 1e-12), 0.0, 1.0))
        out[:, j] = (aq - mu) @ np.array([w, 1.0 - w]) + z[:, j].mean()
    return out.astype(np.float32)


def predict(variant, f, xy, train, y_train, seed, knn_pred):
    """The default model's prediction at every spot, with ``variant``'s change."""
    if variant.startswith("knn-mix"):
        share = float(variant.removeprefix("knn-mix"))
        return (1 - share) * predict("default", f, xy, train, y_train, seed, knn_pred) + share * knn_pred
    n_comp = max(1, min(DEFAULT.n_components, len(y_train) - 1, y_train.shape[1]))
    pca = LinearPCA.fit(y_train, n_comp, seed=seed)
    z = pca.transform(y_train).astype(np.float32)
    f_train, xy_train = f[train], xy[train]
    k = choose_k(xy_train, z)
    if variant == "kriging":
        ctx_query, ctx_train = kriging(xy_train, z, xy)
    elif variant == "bilateral":
        ctx_query, ctx_train = bilateral(xy_train, z, xy, k)
    elif variant == "k-per-component":
        ks = [choose_k(xy_train, z[:, [j]]) for j in range(n_comp)]
        ctx_train = np.column_stack([idw(xy_train, z[:, [j]], xy_train, kj, exclude_self=True)
                                     for j, kj in enumerate(ks)])
        ctx_query = np.column_stack([idw(xy_train, z[:, [j]], xy, kj) for j, kj in enumerate(ks)])
    else:
        ctx_train = idw(xy_train, z, xy_train, k, exclude_self=True)
        ctx_query = idw(xy_train, z, xy, k)
    img_train = _centred_oof(f_train, z, seed) if variant == "centred-oof" else image_oof(f_train, z, seed)
    img_query = ridge_probe(f_train, z, f)[0]
    if variant == "convex-stack":
        ctx_query = _convex_blend(ctx_train, img_train, ctx_query, img_query, z)
    else:
        ctx_query = Blend.fit(ctx_train, img_train, z)(ctx_query, img_query)
    near = idw(xy_train, y_train, xy, choose_k(xy_train, y_train))
    outside = near - pca.inverse_transform(pca.transform(near))
    base = pca.inverse_transform(ctx_query) + DEFAULT.outside_weight * outside
    pred = (1 - DEFAULT.image_blend) * base + DEFAULT.image_blend * ridge_probe(f_train, y_train, f)[0]
    return np.maximum(pred, 0).astype(np.float32)


def main(argv=None) -> int:
    ap = base_parser(__doc__.splitlines()[0], ",".join(VARIANTS))
    ap.add_argument("--check", action="store_true",
                    help="first compare 'default' with the library's model on the first row")
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    names = [S.normalise_name(n) for n in (args.sections.split(",") if args.sections else S.discover(args.data))]
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    secs = S.load(names, args.data, progress=False)
    records, checked = [], not args.check
    with deterministic(1):
        for sec, split, y, seed in rows(secs, names, args.protocols.split(","), seeds):
            y_train = np.asarray(y[split.train], np.float32)
            knn = create_method("knn").fit(sec.spots(split.train), y_train).predict(sec.spots(np.arange(sec.n)))
            records.append(_record(sec, split, y, knn, seed, "knn"))
            for v in variants:
                pred = predict(v, sec.features, sec.xy, split.train, y_train, seed, knn)
                if v == "default" and not checked:
                    model = HisToSGE("neighbours", seed=seed).fit_spots(sec.spots(split.train), y_train,
                                                                         progress=False)
                    lib = model.predict_spots(sec.spots(np.arange(sec.n)))
                    gap = float(np.abs(lib - pred).max())
                    print(f"check on {sec.name} {split.protocol} seed {seed}: max |model - default| = "
                          f"{gap:.2e}", file=sys.stderr)
                    if gap > 1e-3:
                        raise SystemExit("the rebuilt default differs from the model; the variants would not "
                                         "be comparable")
                    checked = True
                records.append(_record(sec, split, y, pred, seed, v))
            print(f"{sec.name} {split.protocol} seed {seed} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    means = _means(records)
    _print(means, ["knn", *variants])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"argv": sys.argv[1:], "seconds": time.perf_counter() - t0,
                                              "means": means, "records": records}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
