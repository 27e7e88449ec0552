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

from histosge.benchmark import methods as M
from histosge.benchmark import protocols as P
from histosge.benchmark import sections as S
from histosge.benchmark.runner import _deterministic, _subset, fit_prior
from histosge.genes import log_normalize
from histosge.model import HisToSGE

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
    with _deterministic(1):
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
    task = M.Task(_subset(sec, split.train), y[split.train], _subset(sec, everyone), seed=seed)
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
            model = HisToSGE("neighbours", seed=seed, prior=prior, **VARIANTS[v])
            model.fit(sec.adata[split.train], genes=genes, features=sec.features[split.train], progress=False)
            pred = np.asarray(model.predict(sec.adata, features=sec.features, progress=False).X)
            rec = {**_record(sec, split, y, pred, seed, v), **where}
            info = model.info_.get("prior", {})
            rec.update({f"prior_{k}": info[k] for k in ("stack_weight", "gene_head_alpha", "blend_weights")
                        if k in info})
            out.append(rec)
    return out


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
