"""What one fit of STAGE and THItoGene, and one STAGATE clustering, cost on this machine.

Each is timed at two short lengths on the benchmark's own inputs (protocol split seed 0, the
1000 HVGs of the training spots, cached he-stats features, one torch thread, deterministic
kernels), so the slope is the cost of one epoch and the intercept that of building and
predicting; the projection is intercept + slope x the published number of epochs. These are
the measured reasons docs/BENCHMARK.md gives for leaving STAGE and THItoGene out of the DLPFC
comparison and for running STAGATE on one seed only.

    python bench/paper_baselines_cost.py --data ../shared/data \
        --sections dlpfc:151673,her2st:C2 --protocols R,G --out bench/results/paper_baselines_cost.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import date
from pathlib import Path

import numpy as np


def _load() -> float:
    return float(os.getloadavg()[0])


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(name: str, protocol: str, data: str, short: dict) -> list[dict]:
    from histosge.benchmark import deterministic
    from histosge.benchmark import domains as D
    from histosge.benchmark import protocols as P
    from histosge.benchmark import sections as S
    from histosge.methods import create_method, stage, thitogene

    sec = S.load([name], data, progress=False)[name]
    split = P.split_r(sec.n, 0) if protocol == "R" else P.split_g(sec.rows, sec.cols, sec.grid, 4)
    _, _, y = P.within_section_genes(sec.adata, split.train)
    train, query = sec.spots(split.train), sec.spots(np.arange(sec.n))
    jobs = {
        "stage": (stage.EPOCHS, lambda e: create_method("stage", grid=sec.grid, epochs=e).fit(
            train, y[split.train]).predict(query)),
        "thitogene": (thitogene.EPOCHS, lambda e: create_method("thitogene", epochs=e).fit(
            train, y[split.train], query=query).predict(query)),
        "stagate": (D.EPOCHS, lambda e: D.stagate(y, sec.xy, max(D.n_domains(sec.labels), 2), 0, n_epochs=e)),
    }
    out = []
    with deterministic(1):
        for what, (published, fit) in jobs.items():
            lo, hi = short[what]
            load0 = _load()
            t_lo, t_hi = _timed(lambda f=fit, e=lo: f(e)), _timed(lambda f=fit, e=hi: f(e))
            per_epoch = (t_hi - t_lo) / (hi - lo)
            fixed = max(0.0, t_lo - lo * per_epoch)
            rec = {"section": name, "protocol": protocol, "what": what, "n_train": int(len(split.train)),
                   "n_spots": int(sec.n), "epochs_timed": [lo, hi], "seconds_timed": [t_lo, t_hi],
                   "seconds_per_epoch": per_epoch, "seconds_fixed": fixed, "published_epochs": published,
                   "projected_seconds_per_fit": fixed + per_epoch * published,
                   "load_average_1min": [load0, _load()]}
            out.append(rec)
            print(f"{name} {protocol} {what}: {per_epoch:.3f} s/epoch x {published} = "
                  f"{rec['projected_seconds_per_fit'] / 3600:.2f} h per fit (load {load0:.1f})", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("HISTOSGE_DATA", "../shared/data"))
    ap.add_argument("--sections", default="dlpfc:151673,her2st:C2")
    ap.add_argument("--protocols", default="R,G")
    ap.add_argument("--out", default="bench/results/paper_baselines_cost.json")
    args = ap.parse_args()
    short = {"stage": (10, 30), "thitogene": (1, 3), "stagate": (20, 60)}
    records = []
    for name in args.sections.split(","):
        for protocol in args.protocols.split(","):
            records += measure(name, protocol, args.data, short)
    meta = {"date": date.today().isoformat(), "cpu_count": os.cpu_count(), "torch_threads": 1,
            "command": "python bench/paper_baselines_cost.py " + " ".join(
                f"--{k} {v}" for k, v in vars(args).items() if k != "data") + " --data ../shared/data",
            "note": "machine shared with other jobs; load_average_1min says how busy it was"}
    Path(args.out).write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
