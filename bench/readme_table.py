"""The README's benchmark tables, from a ``histosge bench`` results.json.

Why: the README quotes only numbers a repo command wrote; this is that command.

    python bench/readme_table.py bench/results/benchmark/results.json
    python bench/readme_table.py --cohort bench/results/benchmark_prior/results.json

Cells: pcc / pcc_top50 / MSE (DLPFC: / ARI), mean over the seeds in the file; the best pcc and
pcc_top50 of each row in bold (``histosge.benchmark.report.readme_tables``). 'mean' is left out
(pcc 0 by construction; it is in the report). ``--cohort`` prints the table of protocols R+ and
G+ instead: histosge with and without its prior next to the best baseline with and without
pooled spots, row by row against issue 16's targets (``report.prior_scoreboard``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from histosge.benchmark.report import prior_scoreboard, readme_tables


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cohort = "--cohort" in argv
    argv = [a for a in argv if a != "--cohort"]
    if len(argv) != 1:
        print("usage: python bench/readme_table.py [--cohort] RESULTS_JSON", file=sys.stderr)
        return 2
    records = json.loads(Path(argv[0]).read_text())
    print("\n".join(prior_scoreboard(records) if cohort else readme_tables(records)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
