"""Output size on disk: before and after the storage rule (histosge.storage), and what the rounding
does to held-out scores.

Why: a cohort of thousands of slides needs outputs of a few MB each. Before the rule,
``write_output`` called ``AnnData.write_h5ad`` as it is: dense float32 X, a copy of the
predictions in ``layers['predicted']`` for generated spots, ``obsm['features']``, no compression
(121 MB for DLPFC 151673 at 4x). This runs ``superres`` and ``recover`` on DLPFC 151673 (default
model and encoder) and writes each result four ways: as before (``AnnData.write_h5ad``), with
the rule lossless, with the rule (the default), and with the rule keeping features. Then it
reads each back with plain anndata and checks what came back, and it scores ``recover``'s
held-out spots from the arrays as computed and as read back rounded.

    python bench/output_size.py --data ../shared/data --out bench/results/output_size.json
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

ROOT = Path(__file__).resolve().parents[1]


def _sizes(adata, folder: Path, name: str) -> dict:
    import anndata as ad
    import h5py

    from histosge.storage import QUANTUM, quantize, write_h5ad

    ways = {
        "before (AnnData.write_h5ad, as write_output at 7677fd0)": lambda p: adata.write_h5ad(p),
        "rule, lossless": lambda p: write_h5ad(adata, p, lossless=True),  # what write_output writes, atomically
        "rule (default)": lambda p: write_h5ad(adata, p),
        "rule, keeping features": lambda p: write_h5ad(adata, p, features=True),
    }
    out = {}
    for label, write in ways.items():
        path = folder / f"{name}_{len(out)}.h5ad"
        t0 = time.perf_counter()
        write(path)
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        back = ad.read_h5ad(path)
        t_read = time.perf_counter() - t0
        size = path.stat().st_size
        row = {"bytes": size, "mb": round(size / 1e6, 1),
               "mb_per_10k_spots_at_1000_genes": round(size / adata.n_obs * 1e4 / 1e6 * 1000 / adata.n_vars, 1),
               "write_s": round(t_write, 1), "read_s": round(t_read, 1), "features_stored": "features" in back.obsm}
        x, p = np.asarray(adata.X), np.asarray(adata.layers["predicted"])
        bx, bp = np.asarray(back.X), np.asarray(back.layers["predicted"])
        if label.startswith("rule") and "lossless" not in label:
            row["read_back_equals_rounded"] = bool(np.array_equal(bx, quantize(x)) and np.array_equal(bp, quantize(p)))
            row["max_abs_change"] = float(max(np.abs(bx - x).max(), np.abs(bp - p).max()))
            row["bound"] = QUANTUM / 2
        else:
            row["read_back_exact"] = bool(np.array_equal(bx, x) and np.array_equal(bp, p))
        with h5py.File(path) as f:
            row["layer_predicted_is_virtual"] = bool(f["layers/predicted"].is_virtual)
        out[label] = row
        path.unlink()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("HISTOSGE_DATA", "../shared/data"))
    ap.add_argument("--section", default="dlpfc:151673")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    import histosge
    from histosge.evaluate import score
    from histosge.storage import quantize

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = histosge.read_section(args.section, data_dir=args.data)
    sr = histosge.superres(adata, progress=False)
    rec = histosge.recover(adata, holdout=0.5, seed=0, progress=False)
    result = {"command": "python bench/output_size.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
              "section": args.section}
    with tempfile.TemporaryDirectory() as tmp:
        for name, a in (("superres_4x", sr), ("recover", rec)):
            result[name] = {"spots": int(a.n_obs), "genes": int(a.n_vars), "sizes": _sizes(a, Path(tmp), name)}
    held = (rec.obs["split"] == "held-out").to_numpy()
    y, p = np.asarray(rec.X)[held], np.asarray(rec.layers["predicted"])[held]
    exact, rounded = score(y, p), score(quantize(y), quantize(p))
    result["recover"]["held_out_scores"] = {
        k: {"exact": round(float(exact[k]), 6), "rounded": round(float(rounded[k]), 6),
            "difference": float(rounded[k] - exact[k])} for k in ("pcc", "pcc_top50", "mse", "mae")}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
