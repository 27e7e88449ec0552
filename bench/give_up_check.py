"""Does stopping a correction network that beat its start in none of its first 5 epochs
(``TrainConfig.give_up``) change any prediction? Fits the default model as ``histosge bench``
does, with ``give_up=0`` (never), and records when each network first beat its starting point.

Why: with the patience rule alone, a network that never improves still trains 20 epochs (~90 s
on DLPFC). ``give_up=5`` moves no number if no network first improves after epoch 5.

    python bench/give_up_check.py --data ../shared/data --seeds 0,1,2 --out bench/results/give_up_check.json
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
from histosge.genes import log_normalize
from histosge.model import HisToSGE, Spots


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("HISTOSGE_DATA", "../shared/data"))
    ap.add_argument("--sections", default=None)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    names = [S.normalise_name(n) for n in (args.sections.split(",") if args.sections else S.discover(args.data))]
    seeds = [int(s) for s in args.seeds.split(",")]
    secs = S.load(names, args.data, progress=False)
    rows, t0 = [], time.perf_counter()
    with deterministic(1):
        for name in names:
            sec = secs[name]
            for protocol in ("R", "G"):
                for seed in seeds if protocol == "R" else seeds[:1]:
                    split = P.split_r(sec.n, seed) if protocol == "R" else P.split_g(sec.rows, sec.cols, sec.grid)
                    _, _, y = P.within_section_genes(sec.adata, split.train, P.N_GENES)
                    model = HisToSGE(seed=seed, network={"give_up": 0}).fit_spots(
                        sec.spots(split.train), y[split.train], progress=False)
                    rows.append(_row(name, protocol, seed, model))
                    print(json.dumps(rows[-1]), file=sys.stderr)
        for target, sources in P.cross_groups(names).items():
            for seed in seeds[:1]:
                genes, _ = P.cross_section_genes([secs[s].adata for s in sources], secs[target].adata, P.N_GENES)
                train = Spots(*(np.concatenate([getattr(secs[s].spots(np.arange(secs[s].n)), f) for s in sources])
                                for f in ("features", "rows", "cols", "xy")))
                y = np.vstack([log_normalize(secs[s].adata, genes) for s in sources])
                groups = np.concatenate([np.full(secs[s].n, i) for i, s in enumerate(sources)])
                model = HisToSGE("image", seed=seed, network={"give_up": 0}).fit_spots(train, y, groups=groups,
                                                                                    progress=False)
                rows.append(_row(target, "X", seed, model))
                print(json.dumps(rows[-1]), file=sys.stderr)
    trained = [r for r in rows if r["epochs_run"]]
    late = [r for r in trained if r["best_epoch"] and r["best_epoch"] > 5 and not r["improved_by_5"]]
    result = {"fits": len(rows), "networks_trained": len(trained), "first_improvement_after_epoch_5": len(late),
              "seconds": round(time.perf_counter() - t0, 1), "rows": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _row(name, protocol, seed, model):
    h = model.method_.network_.history
    vals, start = h.get("val_loss", []), h.get("initial_val_loss")
    first = next((i + 1 for i, v in enumerate(vals) if start is not None and v < start * (1 - 0.005) - 1e-9), None)
    return {"section": name, "protocol": protocol, "seed": seed, "epochs_run": h.get("epochs_run", 0),
            "best_epoch": h.get("best_epoch"), "first_better_epoch": first,
            "improved_by_5": bool(first is not None and first <= 5), "skipped": h.get("skipped")}


if __name__ == "__main__":
    raise SystemExit(main())
