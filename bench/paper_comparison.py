"""The HisToSGE paper's comparison on DLPFC, held-out (issue 18): merge the runs, check, summarise.

The runs (each a plain ``histosge bench``; parts because STAGATE is slow on a CPU):

    M=mean,knn,ridge,stnet,histogene,deepspace,histosge
    histosge bench --data ../shared/data --out bench/results/benchmark_paper_comparison/parts/kmeans \\
        --sections dlpfc/151673,dlpfc/151676 --protocols R,G --methods $M --seeds 0,1,2
    for s in 151673 151676; do for p in R G; do
      histosge bench --data ../shared/data --out bench/results/benchmark_paper_comparison/parts/stagate_${s}_$p \\
          --sections dlpfc/$s --protocols $p --methods knn,stnet,histogene,deepspace,histosge --seeds 0 \\
          --domains kmeans,stagate
    done; done

then

    python bench/paper_comparison.py merge    # -> bench/results/benchmark_paper_comparison/{results.json,report.md}
    python bench/paper_comparison.py table    # the README's table

``merge`` takes the STAGATE parts first, so their seed-0 records (which carry ``ari_stagate``)
stand for that seed, and checks that every record measured twice agrees with its twin on every
score (a refit must reproduce: histogene to 1e-4 relative, everything else exactly); ``table``
prints ``report_domains.comparison_table`` of the merged results. Parts that are missing (a run
not finished) are skipped and named.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path("bench/results/benchmark_paper_comparison")
STAGATE_PARTS = ("stagate_151673_R", "stagate_151676_R", "stagate_151673_G", "stagate_151676_G")
METHODS = ("histosge", "knn", "ridge", "stnet", "histogene", "deepspace", "stage", "thitogene", "mean")
SCORES = ("pcc", "pcc_top50", "mse", "mae", "ari", "ari_measured")


def _key(r: dict) -> tuple:
    return (r["dataset"], r["section"], r["protocol"], r["seed"], r["method"])


def check_twins(parts: list[Path]) -> list[str]:
    """Records measured in more than one part that disagree on a score."""
    seen: dict = {}
    problems = []
    for part in parts:
        for r in json.loads((part / "results.json").read_text()):
            k = _key(r)
            if k in seen:
                rel = 1e-4 if r["method"] == "histogene" else 0.0
                for s in SCORES:
                    a, b = seen[k].get(s), r.get(s)
                    same = a == b or (a is not None and b is not None and math.isclose(a, b, rel_tol=rel, abs_tol=0))
                    if not same:
                        problems.append(f"{k} {s}: {a} vs {b} ({part.name})")
            else:
                seen[k] = r
    return problems


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["merge"]:
        from histosge.benchmark.report import merge

        names = [*STAGATE_PARTS, "kmeans"]
        parts = [ROOT / "parts" / n for n in names if (ROOT / "parts" / n / "results.json").exists()]
        missing = [n for n in names if not (ROOT / "parts" / n / "results.json").exists()]
        if missing:
            print(f"missing parts (skipped): {', '.join(missing)}")
        problems = check_twins(parts)
        for p in problems:
            print("MISMATCH", p)
        for path in merge(parts, ROOT):
            print("wrote", path)
        return 1 if problems else 0
    if argv[:1] == ["table"]:
        from histosge.benchmark.report_domains import comparison_table

        records = json.loads((ROOT / "results.json").read_text())
        print("\n".join(comparison_table(records, METHODS)))
        return 0
    print("usage: python bench/paper_comparison.py merge|table", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
