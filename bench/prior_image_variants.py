"""Is the cohort prior itself the limit? Image-mode variants predicting a section from the others.

Why: docs/MODEL_NOTES.md section 19 finds that mixing the model with the prior cannot reach the
1.2x target on several her2st rows even with the weight chosen on the held-out spots. This asks
whether a better prior is within reach with the same offline features: an image-mode
``HisToSGE`` fitted on the other sections (as ``benchmark.runner.fit_prior``, on the target's
protocol-R genes, seed 0) predicts every spot of the target, under constructor variants and with
the features standardised per section. Mean per-gene Pearson over all spots of the target (the
prior never saw any of them):

    python bench/prior_image_variants.py --data ../shared/data --out bench/results/model_variants/prior_image.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from histosge.benchmark import deterministic
from histosge.benchmark import protocols as P
from histosge.benchmark import sections as S
from histosge.evaluate import score
from histosge.model import HisToSGE

#: target -> the sections its prior learns from (same patient for C3/C4, other patients for B4).
CASES = {"her2st:C3": ["her2st:C2", "her2st:C4"], "her2st:C4": ["her2st:C2", "her2st:C3"],
         "her2st:B4": ["her2st:C2", "her2st:C3", "her2st:C4"]}
#: name -> constructor arguments of the image-mode model ("per-section z" standardises features).
VARIANTS = {"default": {}, "ring 19": {"ring": 19}, "ring 37": {"ring": 37},
            "components only": {"outside_weight": 0.0}, "30 components": {"n_components": 30},
            "per-section z": {}}


def _z(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, np.float32)
    return (f - f.mean(0)) / (f.std(0) + 1e-6)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("HISTOSGE_DATA", "../shared/data"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    secs = S.load(sorted(set(CASES) | {s for v in CASES.values() for s in v}), args.data, progress=False)
    rows = []
    with deterministic(1):
        for target, sources in CASES.items():
            t = secs[target]
            genes, _, y = P.within_section_genes(t.adata, P.split_r(t.n, 0).train, P.N_GENES)
            shared = P.shared_genes(genes, [secs[s].adata for s in sources])
            covered = np.isin(genes, shared)
            for name, params in VARIANTS.items():
                feats, query = [secs[s].features for s in sources], t.features
                if name == "per-section z":
                    feats, query = [_z(f) for f in feats], _z(query)
                model = HisToSGE("image", seed=0, **params)
                model.fit([secs[s].adata for s in sources], genes=shared, features=feats, progress=False)
                pred = np.asarray(model.predict(t.adata, features=query, progress=False).X)
                rows.append({"target": target, "sources": sources, "variant": name,
                             "pcc": score(y[:, covered], pred)["pcc"]})
                print(f"{target} {name}: {rows[-1]['pcc']:.3f}", file=sys.stderr)
    if args.out:
        Path(args.out).write_text(json.dumps({"argv": sys.argv[1:], "seconds": time.perf_counter() - t0,
                                              "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
