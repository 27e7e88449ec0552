"""Is ``cv_pcc`` honest? Each gene's estimate, made at training, against the Pearson its prediction
really has on spots the model never saw.

    python bench/gene_reliability.py --data ../shared/data --out bench/results/gene_reliability.json

Rows (all through the public API, the way ``histosge train`` / ``predict`` / ``recover`` run):

- **slide**: an image-mode model of her2st C2 + C3 (saved and loaded), predicting C4's H&E slide
  (``slides/her2st_C4.ome.tif``, pixel-aligned with C4's spot file); each measured C4 spot takes
  its nearest virtual spot, and each gene is scored over C4's measured spots. The issue's row.
- **X**: the same on measured spots, for every other way of holding a her2st section out (two or
  three sections train, the last is predicted from its own patches; B4 is another patient).
- **recover**: neighbours mode (``histosge.recover``, half the spots held out, seed 0) on every
  shipped section; cv_pcc against the held-out spots' per-gene Pearson.

Per row: mean estimate vs mean held-out Pearson (bias), mean absolute error per gene, Spearman of
the estimate with the truth next to two cheap rankers (the plain fold mean the estimate shrinks,
and the prediction's own spread over the scored spots: a number one only has *after* predicting),
and the ``reliable`` flag's count and the median held-out Pearson of flagged and other genes.
Genes the target measures as constant have no Pearson and are left out (counted).
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
from scipy.stats import spearmanr

import histosge
from histosge import tasks
from histosge.evaluate import pearson_per_gene
from histosge.genes import log_normalize
from histosge.model import HisToSGE

X_SPLITS = [("her2st:C3,her2st:C4", "her2st:C2"), ("her2st:C2,her2st:C4", "her2st:C3"),
            ("her2st:C2,her2st:C3", "her2st:C4"), ("her2st:B4,her2st:C2", "her2st:C3"),
            ("her2st:C2,her2st:C3,her2st:C4", "her2st:B4")]
RECOVER = ["her2st:B4", "her2st:C2", "her2st:C3", "her2st:C4", "dlpfc:151673", "dlpfc:151676"]


def compare(var, truth: np.ndarray, pred: np.ndarray) -> dict:
    """The estimate (``var['cv_pcc']``, ``var['reliable']``) against the held-out Pearson ``truth``
    of each gene; ``pred``: the scored predictions (their per-gene spread is the cheap ranker)."""
    ok = np.isfinite(truth)
    cv = var["cv_pcc"].to_numpy(np.float64)[ok]
    raw = var["fold_mean_pcc"].to_numpy(np.float64)[ok] if "fold_mean_pcc" in var else None
    rel = var["reliable"].to_numpy(bool)[ok]
    t = truth[ok]
    spread = np.asarray(pred, np.float64).std(0)[ok]
    out = {"n_genes": int(ok.sum()), "n_constant_left_out": int((~ok).sum()),
           "mean_heldout_pcc": float(t.mean()), "mean_cv_pcc": float(cv.mean()), "bias": float(cv.mean() - t.mean()),
           "mae": float(np.abs(cv - t).mean()), "spearman": float(spearmanr(cv, t).correlation),
           "spearman_spread": float(spearmanr(spread, t).correlation),
           "n_reliable": int(rel.sum()),
           "median_heldout_pcc_reliable": float(np.median(t[rel])) if rel.any() else None,
           "median_heldout_pcc_rest": float(np.median(t[~rel])) if (~rel).any() else None}
    if raw is not None:
        out |= {"spearman_fold_mean": float(spearmanr(raw, t).correlation),
                "mae_fold_mean": float(np.abs(raw - t).mean())}
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def _with_fold_mean(model, var):
    var = var.copy()
    var["fold_mean_pcc"] = model.reliability_.raw_pcc
    return var


def image_rows(data: str, seed: int) -> dict:
    rows = {}
    read = {}

    def section(name):
        if name not in read:
            read[name] = histosge.read_section(name, data_dir=data)
        return read[name]

    for train, target in X_SPLITS:
        model = HisToSGE("image", seed=seed).fit([section(s) for s in train.split(",")], progress=False)
        with tempfile.TemporaryDirectory() as tmp:  # what a user's model file carries
            model.save(Path(tmp) / "m.histosge")
            model = HisToSGE.load(Path(tmp) / "m.histosge")
        tgt = section(target)
        genes = [g for g in model.genes_ if g in set(tgt.var_names)]
        cols = [model.genes_.index(g) for g in genes]
        y = log_normalize(tgt, genes)
        out = tasks.predict(model, tgt, progress=False)
        var = _with_fold_mean(model, out.var).iloc[cols]
        pred = np.asarray(out.X)[:, cols]
        rows[f"X: {train} -> {target} (its measured spots)"] = compare(var, pearson_per_gene(y, pred), pred)
        if target == "her2st:C4":
            slide = str(Path(data) / "slides" / "her2st_C4.ome.tif")
            sl = tasks.predict(model, slide, progress=False)
            _, idx = cKDTree(np.asarray(sl.obsm["spatial"])).query(np.asarray(tgt.obsm["spatial"], np.float64))
            pred = np.asarray(sl.X)[idx][:, cols]
            rows[f"slide: {train} -> C4's H&E slide (nearest virtual spot)"] = compare(
                var, pearson_per_gene(y, pred), pred)
    return rows


def named_gene(data: str, seed: int, gene: str = "ERBB2") -> dict:
    """The README's example: ``--genes ERBB2`` on the slide row (C2 + C3 -> C4's slide): its
    cv_pcc and reliable flag against its held-out Pearson at C4's measured spots."""
    train = [histosge.read_section(s, data_dir=data) for s in ("her2st:C2", "her2st:C3")]
    tgt = histosge.read_section("her2st:C4", data_dir=data)
    model = HisToSGE("image", genes=[gene], seed=seed).fit(train, progress=False)
    sl = tasks.predict(model, str(Path(data) / "slides" / "her2st_C4.ome.tif"), progress=False)
    _, idx = cKDTree(np.asarray(sl.obsm["spatial"])).query(np.asarray(tgt.obsm["spatial"], np.float64))
    j = model.genes_.index(gene)
    truth = pearson_per_gene(log_normalize(tgt, [gene]), np.asarray(sl.X)[idx][:, [j]])[0]
    return {"gene": gene, "among_hvgs": j < model.n_top_genes, "cv_pcc": round(float(sl.var["cv_pcc"].iloc[j]), 4),
            "reliable": bool(sl.var["reliable"].iloc[j]), "heldout_pcc": round(float(truth), 4)}


def recover_rows(data: str, seed: int, sections: list[str]) -> dict:
    rows = {}
    for name in sections:
        rec = histosge.recover(histosge.read_section(name, data_dir=data), holdout=0.5, seed=seed, progress=False,
                               reliability=True)
        test = (rec.obs["split"] == "held-out").to_numpy()
        pred = np.asarray(rec.layers["predicted"])[test]
        var = rec.var.copy()
        rows[f"recover: {name} (half held out, seed {seed})"] = compare(
            var, pearson_per_gene(np.asarray(rec.X)[test], pred), pred)
    return rows


def markdown(result: dict) -> str:
    """The README's table ("Which genes can I trust?") from a result file."""
    lines = ["| held out | genes | mean held-out pcc | bias | error per gene | Spearman: cv_pcc | fold mean | "
             "predicted spread | reliable | median pcc: reliable / rest |", "|" + "---|" * 10]
    for name, r in result["rows"].items():
        what = name.split(": ", 1)[1].replace("her2st:", "").replace("dlpfc:", "")
        fold = r.get("spearman_fold_mean")
        lines.append(f"| {name.split(':')[0]}: {what} | {r['n_genes']} | {r['mean_heldout_pcc']:.3f} | "
                     f"{r['bias']:+.3f} | {r['mae']:.3f} | {r['spearman']:.3f} | "
                     f"{'-' if fold is None else format(fold, '.3f')} | {r['spearman_spread']:.3f} | "
                     f"{r['n_reliable']} | {r['median_heldout_pcc_reliable']:.3f} / "
                     f"{r['median_heldout_pcc_rest']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("HISTOSGE_DATA", "../shared/data"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recover", default=",".join(RECOVER), help="sections for the neighbours-mode rows ('' none)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--markdown", default=None, help="print the README table of this result file and stop")
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return 0
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = image_rows(args.data, args.seed)
        named = named_gene(args.data, args.seed)
        rows |= recover_rows(args.data, args.seed, [s for s in args.recover.split(",") if s])
    from histosge.model.reliability import RULE

    result = {"rule": RULE, "seed": args.seed, "seconds": round(time.perf_counter() - t0, 1), "rows": rows,
              "named_gene_on_the_slide_row": named}
    print(named)
    cols = ("bias", "mae", "spearman", "spearman_fold_mean", "spearman_spread", "n_reliable",
            "median_heldout_pcc_reliable", "median_heldout_pcc_rest")
    print(f"{'':70s} " + " ".join(f"{c[:12]:>12s}" for c in ("mean truth", *cols)))
    for name, r in rows.items():
        cells = [r["mean_heldout_pcc"], *(r.get(c) for c in cols)]
        print(f"{name[:70]:70s} " + " ".join(f"{'-' if v is None else format(v, 'g'):>12s}" for v in cells))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
