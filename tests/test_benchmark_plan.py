"""benchmark.plan: the protocols turned into (section, protocol, seed) tasks, in the order they run."""

import anndata as ad
import numpy as np
import pandas as pd

from histosge.benchmark import protocols
from histosge.benchmark.plan import plan
from histosge.benchmark.sections import Section


def _section(name, n_rows, n_cols):
    rc = [(r, c) for r in range(n_rows) for c in range(n_cols) if (r + c) % 2 == 0]
    obs = pd.DataFrame({"array_row": [r for r, _ in rc], "array_col": [c for _, c in rc]},
                       index=[f"s{i}" for i in range(len(rc))])
    adata = ad.AnnData(np.zeros((len(rc), 2), np.float32), obs=obs)
    adata.obsm["spatial"] = np.array([[c * 100.0, r * 100.0] for r, c in rc])
    adata.uns["histosge"] = {"grid": "hex"}
    return Section(name, adata, np.zeros((len(rc), 1), np.float32), "e")


def test_plan_orders_tasks_like_the_run_and_names_what_it_skips():
    secs = {"dlpfc/a": _section("dlpfc/a", 30, 40), "dlpfc/b": _section("dlpfc/b", 30, 40),
            "her2st/C2": _section("her2st/C2", 6, 8)}
    tasks, skipped = plan(secs, ["R", "G", "X", "R+"], [0, 1])
    keys = [(t.name, t.protocol, t.seed) for t in tasks]
    assert keys[:6] == [("dlpfc/a", p, s) for p in ("R", "G", "R+") for s in (0, 1)]
    assert keys[-4:] == [("dlpfc/a", "X", 0), ("dlpfc/a", "X", 1), ("dlpfc/b", "X", 0), ("dlpfc/b", "X", 1)]
    assert ("her2st/C2", "R", 0) in keys and ("her2st/C2", "G", 0) not in keys  # its lattice is too small
    assert any(line.startswith("her2st/C2 G: skipped") for line in skipped)
    assert any(line.startswith("her2st/C2 R+: skipped") for line in skipped)  # no other her2st section
    by = {(t.name, t.protocol, t.seed): t for t in tasks}
    assert by[("dlpfc/a", "X", 0)].sources == ["dlpfc/b"] and not len(by[("dlpfc/a", "X", 0)].split.train)
    assert by[("dlpfc/a", "R+", 1)].cohorts == [("same patient", ["dlpfc/b"])]
    r = protocols.split_r(secs["dlpfc/a"].n, 1)
    assert np.array_equal(by[("dlpfc/a", "R+", 1)].split.test, r.test)  # R+ scores R's spots
    assert np.array_equal(by[("dlpfc/a", "G", 0)].split.test, by[("dlpfc/a", "G", 1)].split.test)  # unseeded
