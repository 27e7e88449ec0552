"""The README's benchmark tables, from a ``histosge bench`` results.json.

Why: the README quotes only numbers a repo command wrote; this is that command.

    python bench/readme_table.py bench/results/benchmark/results.json

Cells: pcc / pcc_top50 / MSE (DLPFC: / ARI), mean over the seeds in the file; the best pcc and
pcc_top50 of each row in bold. 'mean' is left out (pcc 0 by construction; it is in the report).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np

METHODS = ("knn", "ridge", "stnet", "histogene", "histosge")


def _mean(records: list[dict], key: str) -> float:
    vals = [r[key] for r in records if r.get(key) is not None]
    return float(np.mean(vals)) if vals else float("nan")


def tables(records: list[dict]) -> str:
    by = defaultdict(list)
    for r in records:
        by[(r["dataset"], r["section"], r["protocol"], r["method"])].append(r)
    out = []
    for protocol in ("R", "G", "X"):
        methods = [m for m in METHODS if any(k[2] == protocol and k[3] == m for k in by)]
        if not methods:
            continue
        out += ["", "| section | protocol | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
        for dataset, section in sorted({(k[0], k[1]) for k in by if k[2] == protocol}):
            keys = ("pcc", "pcc_top50", "mse", "ari")
            vals = {m: {key: _mean(by[(dataset, section, protocol, m)], key) for key in keys}
                    for m in methods if by.get((dataset, section, protocol, m))}
            best_pcc = max(vals, key=lambda m: vals[m]["pcc"])
            best_top = max(vals, key=lambda m: vals[m]["pcc_top50"])
            cells = []
            for m in methods:
                if m not in vals:
                    cells.append("-")
                    continue
                v = vals[m]
                pcc = f"**{v['pcc']:.3f}**" if m == best_pcc else f"{v['pcc']:.3f}"
                top = f"**{v['pcc_top50']:.3f}**" if m == best_top else f"{v['pcc_top50']:.3f}"
                cell = f"{pcc} / {top} / {v['mse']:.3f}"
                if dataset == "dlpfc" and np.isfinite(v["ari"]):
                    cell += f" / {v['ari']:.2f}"
                cells.append(cell)
            out.append(f"| {dataset}/{section} | {protocol} | " + " | ".join(cells) + " |")
    return "\n".join(out).lstrip("\n")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python bench/readme_table.py RESULTS_JSON", file=sys.stderr)
        return 2
    print(tables(json.loads(open(argv[0]).read())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
