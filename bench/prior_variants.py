"""Uses of a cohort prior, measured on the benchmark's own inputs (protocols R+ and G+).

Why: docs/MODEL_NOTES.md section 17 reports what each use of a prior (``HisToSGE(prior=...,
prior_use=..., prior_weight=...)``) bought; this script is the repo command behind those tables.
Each row is made exactly as ``histosge bench --protocols R+,G+`` makes it: the R or G split of a
section, HVGs on its training spots, and per cohort ('same patient', 'other patients'; see
``benchmark.protocols.prior_sources``) a prior fitted on the other sections on the genes they
all measure, through a model file (``benchmark.runner.fit_prior``). Every variant of a row reads
the same prior. The baselines beside them: knn, ridge and ridge+pooled (stnet is left out to
save time; it is in the benchmark).

    python bench/prior_variants.py --data ../shared/data --seeds 0,1,2 \\
        --variants none,context,genes,stack,default --out bench/results/model_variants/prior_uses.json

A variant is the default model with ``prior``, ``prior_use`` or ``prior_weight`` set as
``VARIANTS`` says ('none': no prior at all, i.e. the model of protocols R and G).

'per-gene' is the default model with the prior's weight chosen per gene (``_PerGeneStack``:
each gene's least-squares weight on the training spots, shrunk towards the one global weight by
a strength chosen on out-of-fold training spots). 'moran' is the default model with the prior's
weight a logistic function of each gene's spatial autocorrelation on the training spots
(``_MoranStack``: Moran's I on the 6 nearest training spots; the two coefficients chosen by mean
Pearson on the training spots), since the neighbours carry what is spatially structured. Both
measured, not adopted (docs/MODEL_NOTES.md section 19).

'ceiling' is not a model: the default model's own prediction and the prior's mixed with the one
weight that scores best *on the held-out spots themselves* (``STACK_WEIGHTS``, per row and
seed). No rule that mixes the two with one weight can do better; a target above it needs a
better model or a better prior, not a better weight:

    python bench/prior_variants.py --data ../shared/data --sections her2st:B4,her2st:C2,her2st:C3,her2st:C4 \\
        --seeds 0,1,2 --variants default,per-gene,moran,ceiling --out bench/results/model_variants/prior_stacking.json

``--prior-genes N`` fits each prior on the cohort's own top-N HVGs instead of the row's genes, as
``histosge train OTHERS --mode image --genes N`` would: what a user's prior covers of a new
section's genes, and what that costs (ridge+pooled keeps the row's genes).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from histosge.benchmark import deterministic, fit_prior
from histosge.benchmark import methods as M
from histosge.benchmark import protocols as P
from histosge.benchmark import sections as S
from histosge.evaluate import pearson_per_gene
from histosge.genes import log_normalize
from histosge.methods import list_methods, register_method
from histosge.methods.histosge import HisToSGENeighbours
from histosge.model import HisToSGE, SectionModel
from histosge.model.prior import STACK_WEIGHTS

sys.path.insert(0, str(Path(__file__).parent))
from model_variants import _print, _record, base_parser  # noqa: E402

#: name -> constructor arguments of ``HisToSGE`` (besides ``prior``) that differ from the default;
#: 'none' fits without the prior.
VARIANTS: dict[str, dict | None] = {
    "none": None,
    "default": {},
    "context": {"prior_use": ("context",)},
    "genes": {"prior_use": ("genes",)},
    "stack": {"prior_use": ("stack",)},
    "context+genes": {"prior_use": ("context", "genes")},
    "context+stack": {"prior_use": ("context", "stack")},
    "genes+stack": {"prior_use": ("genes", "stack")},
    "context+genes+stack": {"prior_use": ("context", "genes", "stack")},
}
for _w in (0.25, 0.5, 0.75, 1.0):
    VARIANTS[f"stack{_w}"] = {"prior_use": ("stack",), "prior_weight": _w}
VARIANTS["per-gene"] = {}  # the default model, a weight per gene (_PerGeneStack)
VARIANTS["moran"] = {}  # the default model, the weight a function of each gene's Moran's I (_MoranStack)
VARIANTS["ceiling"] = {}  # the default model, its weight chosen on the held-out spots (see above)
#: Shrinkage strengths of 'per-gene', in training spots' worth (inf: the global weight).
SHRINKAGE = (0.0, 10.0, 30.0, 100.0, 300.0, 1000.0, float("inf"))


class _GeneWiseStack(HisToSGENeighbours):
    """The default model (the method ``histosge``), then the prior's stacking weight replaced by
    one per gene (``_weights``), from the same training-spot inputs the default's one weight is
    chosen on. Registered as a method of its own (``_variant``), run by ``SectionModel``."""

    def fit(self, train, y, **kw):
        self._train = train
        return super().fit(train, y, **kw)

    def _fit_stack(self, y, prior_train, own):
        super()._fit_stack(y, prior_train, own)
        cov = self.prior_.covered
        own = own[:, cov].astype(np.float64)
        pri = (prior_train[:, cov] + self.stack_["offset"][cov]).astype(np.float64)
        self.stack_["weight"] = self._weights(self._train, y[:, cov].astype(np.float64), own, pri).astype(np.float32)


class _PerGeneStack(_GeneWiseStack):
    """Each gene's least-squares weight ``w_g`` on the training spots, shrunk as ``(n w_g + s w) /
    (n + s)`` towards the default's one weight ``w``, ``s`` (``SHRINKAGE``) with the best mean
    Pearson of ``oof_folds``-fold out-of-fold predictions of the training spots."""

    def _weights(self, train, yc, own, pri):
        n, w0 = len(yc), self.stack_["weight"]
        fold = np.random.default_rng(self.seed).permutation(n) % self.oof_folds
        oof = np.zeros((len(SHRINKAGE), *yc.shape))
        for k in range(self.oof_folds):
            fit, held = fold != k, fold == k
            wk = _global_weight(yc[fit], own[fit], pri[fit])
            wg = _gene_weights(yc[fit], own[fit], pri[fit])
            for i, s in enumerate(SHRINKAGE):
                w = _shrink(wg, wk, int(fit.sum()), s)
                oof[i, held] = (1 - w) * own[held] + w * pri[held]
        scores = [float(np.nan_to_num(pearson_per_gene(yc, p)).mean()) for p in oof]
        s = SHRINKAGE[int(np.argmax(scores))]
        self.info["per_gene_shrinkage"] = s
        return _shrink(_gene_weights(yc, own, pri), w0, n, s)


class _MoranStack(_GeneWiseStack):
    """The weight ``1 / (1 + exp(-(a + b z_g)))``, ``z_g`` the gene's Moran's I on the training
    spots (6 nearest neighbours) standardised over genes, ``a`` and ``b`` on a grid by mean
    Pearson on the training spots."""

    def _weights(self, train, yc, own, pri):
        from scipy.spatial import cKDTree

        near = cKDTree(train.xy).query(train.xy, k=min(7, len(yc)))[1][:, 1:]
        z = (yc - yc.mean(0)) / (yc.std(0) + 1e-9)
        moran = (z * z[near].mean(1)).mean(0)
        feat = (moran - moran.mean()) / (moran.std() + 1e-9)
        best = (-np.inf, 0.0, 0.0)
        for a in np.linspace(-4, 4, 17):
            for b in np.linspace(-6, 6, 25):
                w = 1 / (1 + np.exp(-(a + b * feat)))
                score = float(np.nan_to_num(pearson_per_gene(yc, (1 - w) * own + w * pri)).mean())
                best = max(best, (score, a, b))
        _, a, b = best
        self.info["moran_coefficients"] = (float(a), float(b))
        return 1 / (1 + np.exp(-(a + b * feat)))


def _global_weight(y, own, pri) -> float:
    scores = [float(np.nan_to_num(pearson_per_gene(y, (1 - w) * own + w * pri)).mean()) for w in STACK_WEIGHTS]
    return float(STACK_WEIGHTS[int(np.argmax(scores))])


def _variant(v: str) -> str:
    """The registered method of stacking variant ``v`` (registered once, on first use)."""
    name = f"histosge-{v}-stack"
    if name not in list_methods():
        register_method(name, description=f"histosge with the prior's stacking weight per gene ({v})",
                        reads_positions=True, model_mode="neighbours", reads_prior=True)(
            {"per-gene": _PerGeneStack, "moran": _MoranStack}[v])
    return name


def _gene_weights(y, own, pri) -> np.ndarray:
    d = pri - own
    num, den = ((y - own) * d).sum(0), (d * d).sum(0)
    return np.clip(np.divide(num, den, out=np.zeros_like(num), where=den > 1e-12), 0.0, 1.0)


def _shrink(w_gene, w_global, n, strength) -> np.ndarray:
    if np.isinf(strength):
        return np.full_like(w_gene, w_global)
    return (n * w_gene + strength * w_global) / (n + strength)


def main(argv=None) -> int:
    ap = base_parser(__doc__.splitlines()[0], "none,default")
    ap.set_defaults(protocols="R+,G+")
    ap.add_argument("--prior-genes", default="row",
                    help="'row' (the row's genes every cohort section measures) or N (the cohort's top-N HVGs)")
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    protocols = args.protocols.split(",")
    if any(p not in P.WITH_PRIOR for p in protocols):
        ap.error(f"protocols are {', '.join(P.WITH_PRIOR)}")
    names = [S.normalise_name(n) for n in (args.sections.split(",") if args.sections else S.discover(args.data))]
    every = S.discover(args.data)  # the cohort of a named section comes from the whole data folder
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    cohorts = P.prior_sources(every)
    needed = sorted({n for t in names for _, srcs in cohorts.get(t, []) for n in srcs} | set(names))
    secs = S.load(needed, args.data, progress=False)
    records = []
    with deterministic(1):
        for name in names:
            sec = secs[name]
            for protocol in protocols:
                for seed in seeds:
                    split = P.split_r(sec.n, seed) if protocol == "R+" else P.split_g(sec.rows, sec.cols, sec.grid)
                    split = P.Split(protocol, split.train, split.test)
                    genes, _, y = P.within_section_genes(sec.adata, split.train, P.N_GENES)
                    records += _row(sec, split, genes, y, seed, cohorts.get(name, []), secs, variants,
                                    args.prior_genes)
                    print(f"{name} {protocol} seed {seed} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
                    _write(args.out, records, t0)  # after every row: an interrupted run keeps what it did
    _print(_means(records), ["knn", "ridge", "ridge+pooled", *variants])
    _write(args.out, records, t0)
    return 0


def _write(out, records, t0) -> None:
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({"argv": sys.argv[1:], "seconds": time.perf_counter() - t0,
                                         "means": _means(records), "records": records}, indent=1) + "\n")


def _row(sec, split, genes, y, seed, scopes, secs, variants, prior_genes="row") -> list[dict]:
    everyone = np.arange(sec.n)
    task = M.Task(sec.spots(split.train), y[split.train], sec.spots(everyone), seed=seed)
    alone = []
    for method in ("knn", "ridge"):
        alone.append(_record(sec, split, y, M.predict(method, task)[0], seed, method))
    if "none" in variants:
        model = HisToSGE("neighbours", seed=seed)
        model.fit(sec.adata[split.train], genes=genes, features=sec.features[split.train], progress=False)
        pred = np.asarray(model.predict(sec.adata, features=sec.features, progress=False).X)
        alone.append(_record(sec, split, y, pred, seed, "none"))
    out = []
    for scope, names in scopes:
        srcs = [secs[n] for n in names]
        shared = P.shared_genes(genes, [s.adata for s in srcs])
        where = {"prior_from": scope, "prior_sections": names, "section": f"{sec.name} ({scope})"}
        out += [{**r, **where} for r in alone]
        if prior_genes == "row":
            prior, _ = fit_prior(srcs, shared, seed)
        else:  # the cohort's own HVGs, as histosge train --genes N picks them
            prior, _ = fit_prior(srcs, None, seed, n_genes=int(prior_genes))
        where["prior_genes_covered"] = int(np.isin(genes, prior.genes_).sum())
        cohort = M.Cohort(features=np.vstack([s.features for s in srcs]),
                          y=np.vstack([log_normalize(s.adata, shared) for s in srcs]), covered=np.isin(genes, shared),
                          prior=prior, section=sec.adata, section_features=sec.features, train_index=split.train,
                          genes=genes)
        pooled = M.predict("ridge+pooled", M.Task(task.train, task.y_train, task.query, seed=seed, cohort=cohort))[0]
        out.append({**_record(sec, split, y, pooled, seed, "ridge+pooled"), **where})
        for v in variants:
            if VARIANTS[v] is None:
                continue
            if v == "ceiling":
                out.append({**_ceiling(sec, split, y, seed, prior, genes), **where})
                continue
            if v in ("per-gene", "moran"):
                model = SectionModel(_variant(v), seed=seed, prior=prior)
            else:
                model = HisToSGE("neighbours", seed=seed, prior=prior, **VARIANTS[v])
            model.fit(sec.adata[split.train], genes=genes, features=sec.features[split.train], progress=False)
            pred = np.asarray(model.predict(sec.adata, features=sec.features, progress=False).X)
            rec = {**_record(sec, split, y, pred, seed, v), **where}
            info = model.info_.get("prior", {})
            rec.update({f"prior_{k}": info[k] for k in ("stack_weight", "gene_head_alpha", "blend_weights")
                        if k in info})
            if v in ("per-gene", "moran"):
                rec["prior_stack_weight"] = float(np.mean(model.method_.stack_["weight"]))
                for k in ("per_gene_shrinkage", "moran_coefficients"):
                    if k in model.info_:
                        rec[k] = model.info_[k]
            out.append(rec)
    return out


def _ceiling(sec, split, y, seed, prior, genes) -> dict:
    """The default model's side and the prior's, mixed with the one weight best on the held-out spots."""
    from histosge.evaluate import score

    model = HisToSGE("neighbours", seed=seed, prior=prior, prior_weight=0.0)
    model.fit(sec.adata[split.train], genes=genes, features=sec.features[split.train], progress=False)
    sides = []
    for w in (0.0, 1.0):  # the model alone, the prior alone (offset to the section's training means)
        model.method_.stack_["weight"] = w
        sides.append(np.asarray(model.predict(sec.adata, features=sec.features, progress=False).X))
    own, pri = (a[split.test] for a in sides)
    test = y[split.test]
    scores = [score(test, (1 - w) * own + w * pri)["pcc"] for w in STACK_WEIGHTS]
    best = STACK_WEIGHTS[int(np.argmax(scores))]
    pred = y.copy()
    pred[split.test] = (1 - best) * own + best * pri
    return {**_record(sec, split, y, pred, seed, "ceiling"), "prior_stack_weight": float(best)}


def _means(records):
    out = {}
    for r in records:
        out.setdefault((r["section"], r["protocol"], r["method"]), []).append(r)
    res = []
    for (section, protocol, method), rs in out.items():
        row = {"section": section, "protocol": protocol, "method": method, "n_seeds": len(rs)}
        for m in ("pcc", "pcc_top50", "mse", "ari", "prior_stack_weight"):
            vals = [r[m] for r in rs if r.get(m) is not None]
            row[m] = float(np.mean(vals)) if vals else None
        res.append(row)
    return res


if __name__ == "__main__":
    raise SystemExit(main())
