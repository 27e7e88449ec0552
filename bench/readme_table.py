"""The README's benchmark tables, from a ``histosge bench`` folder (or its results file).

Why: the README quotes only numbers a repo command wrote; this is that command.

    python bench/readme_table.py bench/results/benchmark

Cells: pcc / pcc_top50 / MSE (DLPFC: / ARI), mean over the seeds in the file (a pandas group-by,
``histosge.benchmark.results.aggregate``); the best pcc and pcc_top50 of each row in bold. 'mean'
is left out (pcc 0 by construction; it is in the report). The cohort table of protocols R+ and G+
against the project's targets: ``python bench/scoreboard.py --print --cohort FOLDER``.
"""

from __future__ import annotations

import sys

import numpy as np

from histosge.benchmark import report
from histosge.benchmark import results as RS
from histosge.benchmark.protocols import protocols

METHODS = ("knn", "ridge", "stnet", "histogene", "histosge", "histosge-paper", "ridge+pooled", "stnet+pooled",
           "histosge+prior")
METRICS = ("pcc", "pcc_top50", "mse", "ari")


def readme_tables(records: list[dict], methods=METHODS) -> list[str]:
    """One table per protocol: a row per section, a cell per method of ``methods`` that ran."""
    df = report.with_prior_labels(RS.frame(records))
    out: list[str] = []
    for protocol in [p.name for p in protocols()]:
        d = df[(df["protocol"] == protocol) & df["method"].isin(methods)]
        shown = [m for m in methods if (d["method"] == m).any()]
        if not shown:
            continue
        means = RS.aggregate(d, ["dataset", "section", "method"], METRICS)
        rows = []
        for dataset, section in sorted({(k[0], k[1]) for k in means.index}):
            vals = {m: {k: means.loc[(dataset, section, m), (k, "mean")] for k in METRICS}
                    for m in shown if (dataset, section, m) in means.index}
            best_pcc = max(vals, key=lambda m: vals[m]["pcc"])
            best_top = max(vals, key=lambda m: vals[m]["pcc_top50"])
            cells = []
            for m in shown:
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
            rows.append([f"{dataset}/{section}", protocol, *cells])
        out += ["", *report.table(["section", "protocol", *shown], rows)]
    return out[1:]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python bench/readme_table.py BENCHMARK_FOLDER_OR_RESULTS_FILE", file=sys.stderr)
        return 2
    print("\n".join(readme_tables(RS.load_records(argv[0]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
