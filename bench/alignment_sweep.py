"""How far spot positions must be moved before the alignment check refuses them, on random tissue.

Why: ``histosge.read.alignment.score`` refuses an image when the spots' edge AUC is below
``MIN_EDGE_AUC`` or when some transform of the positions raises it by ``MARGIN``. The property
test (tests/test_alignment.py) draws 25 random cases a run; this draws thousands of the same
kind (an elliptic tissue on a 22 x 22 hex grid, the right positions, and positions shifted by
-4..4 pitches and scaled by 0.8-1.2 about the origin, as a wrong scale factor does) and counts,
for each candidate margin, how many right images would be refused and how many moved ones pass,
by how far they were moved (mean displacement of the spots under tissue, in pitches):

    python bench/alignment_sweep.py --cases 3000 --out bench/results/alignment_sweep.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_alignment import LOWRES, PITCH, hex_grid, tissue_image  # noqa: E402

from histosge.read import alignment  # noqa: E402

#: Margins compared, and the displacement bands (in pitches) the moved cases are counted in.
MARGINS = (0.05, 0.04, 0.03, 0.02)
BANDS = ((1.0, 1.5), (1.5, 2.0), (2.0, float("inf")))


def cases(n: int, seed: int):
    """(right score, moved score, mean displacement in pitches) of ``n`` random cases."""
    rng = np.random.default_rng(seed)
    _, _, xs, ys = hex_grid(22, 22, pitch=PITCH, origin=(100.0, 100.0))
    xy, k = np.c_[xs, ys], LOWRES
    done = 0
    while done < n:
        cx, cy = rng.uniform(500, 1500, 2)
        rx, ry = rng.uniform(250, 600, 2)
        dx, dy = rng.integers(-4, 5, 2)
        scale = rng.choice([1.0, 0.8, 0.9, 1.1, 1.2])
        inside = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 < 1
        if inside.sum() < 20 or (~inside).sum() < 20:
            continue
        done += 1
        img = tissue_image(int((xs.max() + 200) * k), int((ys.max() + 200) * k), xy[inside] * k, radius=60 * k)
        right = alignment.score(img, xy[inside] * k, xy[~inside] * k, 55 * k / 2, PITCH * k)
        moved = (xy + [dx * PITCH, dy * PITCH]) * scale
        wrong = alignment.score(img, moved[inside] * k, moved[~inside] * k, 55 * k / 2, PITCH * k)
        yield right, wrong, float(np.linalg.norm(moved[inside] - xy[inside], axis=1).mean()) / PITCH


def refused(s: dict, margin: float) -> bool:
    if "edge_auc" not in s:
        return False
    alt = s.get("best_alternative_edge_auc")
    return s["edge_auc"] < alignment.MIN_EDGE_AUC or (alt is not None and alt >= s["edge_auc"] + margin)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = list(cases(args.cases, args.seed))
    table = []
    for margin in MARGINS:
        row = {"margin": margin, "right_refused": sum(refused(r, margin) for r, _, _ in rows), "right": len(rows)}
        for lo, hi in BANDS:
            band = [w for _, w, d in rows if lo <= d < hi]
            row[f"moved {lo:g}-{hi:g} pitches: passed"] = sum(not refused(w, margin) for w in band)
            row[f"moved {lo:g}-{hi:g} pitches: cases"] = len(band)
        table.append(row)
        print(json.dumps(row))
    if args.out:
        Path(args.out).write_text(json.dumps({"cases": args.cases, "seed": args.seed, "min_edge_auc":
                                              alignment.MIN_EDGE_AUC, "seconds": time.perf_counter() - t0,
                                              "margins": table}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
