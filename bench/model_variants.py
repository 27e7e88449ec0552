"""Variants of the default ``histosge`` model on the benchmark's own inputs (protocols R and G).

Why: docs/MODEL_NOTES.md reports what each model choice bought; this script is the repo command
behind those tables, so every number there can be reproduced. It reads the sections, splits,
genes and scores exactly as ``histosge bench`` does (``histosge.benchmark``), runs ``knn`` and
the ``histosge`` variants named on the command line, and writes the mean over seeds of pcc,
pcc_top50, MSE and (DLPFC) ARI of each variant per section and protocol.

    python bench/model_variants.py --data ../shared/data --seeds 0,1,2 \
        --variants default,blend0.25 --out bench/results/model_variants.json

A variant is the default model with one constructor argument changed (see ``VARIANTS``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from histosge.benchmark import ari, deterministic
from histosge.benchmark import protocols as P
from histosge.benchmark import sections as S
from histosge.evaluate import score
from histosge.methods import create_method
from histosge.model import HisToSGE

#: name -> constructor arguments of ``HisToSGE`` that differ from the default. Add variants here
#: when measuring a new idea. A variant that changes ``k_choices`` changes the knn baseline too,
#: so knn is rerun under it (reported as 'knn[variant]').
VARIANTS: dict[str, dict] = {"default": {}}
for _w in (0.0, 0.1, 0.5):
    VARIANTS[f"blend{_w}"] = {"image_blend": _w}
for _w in (0.0, 0.25, 0.75, 1.0):
    VARIANTS[f"outside{_w}"] = {"outside_weight": _w}
# The k grid before it reached 96 (it stopped at 24), and pure knn at one k (ARI against smoothing).
VARIANTS["kgrid24"] = {"k_choices": (1, 2, 3, 4, 6, 8, 12, 16, 24)}
for _k in (12, 24, 48, 96):
    VARIANTS[f"k{_k}"] = {"k_choices": (_k,)}


def _params(variant: str) -> dict:
    """'a+b' applies variants a and b together."""
    out: dict = {}
    for part in variant.split("+"):
        out.update(VARIANTS[part])
    return out


def _fit(sec: S.Section, split: P.Split, y: np.ndarray, seed: int, params: dict) -> tuple[np.ndarray, dict]:
    model = HisToSGE("neighbours", seed=seed, **params)
    model.fit_spots(sec.spots(split.train), y[split.train], progress=False)
    return model.predict_spots(sec.spots(np.arange(sec.n))), model.info_


def _changes_knn(variant: str) -> bool:
    return "k_choices" in _params(variant)


def base_parser(description: str, variants: str) -> argparse.ArgumentParser:
    """The options every variant script shares (data, sections, protocols, seeds, variants, out)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--data", default=os.environ.get("HISTOSGE_DATA", "../shared/data"))
    ap.add_argument("--sections", default=None, help="comma-separated, e.g. dlpfc:151673,her2st:B4")
    ap.add_argument("--protocols", default="R,G")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--variants", default=variants)
    ap.add_argument("--out", default=None, help="JSON file for the records and means")
    return ap


def rows(secs, names, protocols, seeds):
    """(section, split, log1p expression of every spot, seed) for each row, made as ``histosge
    bench`` makes them (R or G split, HVGs picked on the training spots)."""
    for name in names:
        sec = secs[name]
        for protocol in protocols:
            for seed in seeds:
                split = P.split_r(sec.n, seed) if protocol == "R" else P.split_g(sec.rows, sec.cols, sec.grid)
                _, _, y = P.within_section_genes(sec.adata, split.train, P.N_GENES)
                yield sec, split, y, seed


def _record(sec, split, y, pred, seed, method):
    mixed = y.copy()
    mixed[split.test] = pred[split.test]
    rec = {"section": sec.name, "protocol": split.protocol, "seed": seed, "method": method,
           **score(y[split.test], pred[split.test])}
    rec["ari"] = ari(mixed, sec.labels, seed)
    return rec


def main(argv=None) -> int:
    ap = base_parser(__doc__.splitlines()[0], "default")
    ap.add_argument("--knn-only", action="store_true",
                    help="run only knn under each variant (variants that change k_choices)")
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [p for v in variants for p in v.split("+") if p not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    names = args.sections.split(",") if args.sections else S.discover(args.data)
    names = [S.normalise_name(n) for n in names]
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    secs = S.load(names, args.data, progress=False)
    records = []
    with deterministic(1):
        for sec, split, y, seed in rows(secs, names, args.protocols.split(","), seeds):
            train, everyone = sec.spots(split.train), sec.spots(np.arange(sec.n))
            knn = create_method("knn").fit(train, y[split.train]).predict(everyone)
            records.append(_record(sec, split, y, knn, seed, "knn"))
            for v in variants:
                params = _params(v)
                if args.knn_only or _changes_knn(v):
                    alt = create_method("knn", choices=params.get("k_choices")).fit(train, y[split.train]).predict(
                        everyone)
                    records.append(_record(sec, split, y, alt, seed, f"knn[{v}]"))
                if args.knn_only:
                    continue
                pred, info = _fit(sec, split, y, seed, params)
                rec = _record(sec, split, y, pred, seed, v)
                rec.update({k: info[k] for k in ("k", "k_genes", "image_blend") if k in info})
                records.append(rec)
            print(f"{sec.name} {split.protocol} seed {seed} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    means = _means(records)
    shown = [f"knn[{v}]" for v in variants if _changes_knn(v) or args.knn_only]
    _print(means, ["knn", *shown, *([] if args.knn_only else variants)])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"argv": sys.argv[1:], "seconds": time.perf_counter() - t0,
                                              "means": means, "records": records}, indent=1) + "\n")
    return 0


def _means(records):
    out = {}
    for r in records:
        out.setdefault((r["section"], r["protocol"], r["method"]), []).append(r)
    res = []
    for (section, protocol, method), rs in out.items():
        row = {"section": section, "protocol": protocol, "method": method, "n_seeds": len(rs)}
        for m in ("pcc", "pcc_top50", "mse", "ari"):
            vals = [r[m] for r in rs if r.get(m) is not None]
            row[m] = float(np.mean(vals)) if vals else None
        res.append(row)
    return res


def _print(means, methods):
    print(f"{'section':14s} {'prot':4s} " + " ".join(f"{m:>26s}" for m in methods))
    keys = sorted({(r["section"], r["protocol"]) for r in means})
    for key in keys:
        cells = []
        for m in methods:
            r = next((r for r in means if (r["section"], r["protocol"]) == key and r["method"] == m), None)
            if r is None:
                cells.append(f"{'-':>26s}")
                continue
            ari = f"{r['ari']:.3f}" if r["ari"] is not None else "  -  "
            cells.append(f"{r['pcc']:.3f}/{r['pcc_top50']:.3f}/{r['mse']:.4f}/{ari}".rjust(26))
        print(f"{key[0]:14s} {key[1]:4s} " + " ".join(cells))
    print("cells: pcc / pcc_top50 / mse / ari (mean over seeds)")


if __name__ == "__main__":
    raise SystemExit(main())
