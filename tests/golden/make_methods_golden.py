"""Write tests/golden/methods_golden.npz: every benchmark method's predictions before the registry.

Run once at commit 6d784b7 (the last commit with ``benchmark/baselines*.py`` and the string
if-chain in ``benchmark/methods.py``), one torch thread, deterministic kernels, as the benchmark
runs. ``tests/test_methods_golden.py`` holds the registry's classes (``histosge.methods``) to
these arrays: identical (max abs difference 0) for every method whose behaviour did not change on
purpose. HisToGene and THItoGene build their position tables from training *and* query
positions; the ``Redge`` cases hold them to that where the query reaches past the training grid
(the last row and the first column are never trained).

Inputs are synthetic and stored with the outputs: a 12 x 20 square grid whose first and last
rows and columns all train (the query lies inside the training grid), features that drive the
expression, two "sections" for the methods that take groups.

    PYTHONPATH=src python tests/golden/make_methods_golden.py
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import torch

from histosge.benchmark import baselines, baselines_deepspace, baselines_stage, baselines_thitogene, methods
from histosge.model import Spots

OUT = Path(__file__).with_name("methods_golden.npz")
SMALL_THITOGENE = {"caps": 4, "route_dim": 16, "heads": 4, "gat_heads": 2, "gat_hidden": 32, "gat_out": 32,
                   "dim": 32}


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    rows, cols = (a.ravel().astype(float) for a in np.meshgrid(np.arange(12), np.arange(20), indexing="ij"))
    d, g = 12, 16
    x = rng.normal(size=(len(rows), d)).astype(np.float32)
    w = rng.normal(size=(d, g)).astype(np.float32)
    smooth = np.sin(cols[:, None] / 3.0 + rng.uniform(0, 6, g)) + np.cos(rows[:, None] / 4.0)
    y = np.maximum(x @ w * 0.3 + smooth + 2 + 0.1 * rng.normal(size=(len(rows), g)), 0).astype(np.float32)
    edge = (rows == 0) | (rows == 11) | (cols == 0) | (cols == 19)
    train = np.flatnonzero(edge | (rng.random(len(rows)) < 0.5))
    groups = (cols >= 10).astype(np.int64)  # two "sections": left and right half
    inner = train[(rows[train] != 11) & (cols[train] != 0)]  # the query reaches past the training grid
    return {"x": x, "y": y, "rows": rows, "cols": cols, "xy": np.column_stack([cols * 10.0, rows * 10.0]),
            "train": train, "groups": groups, "train_inner": inner}


def main() -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    a = inputs()
    spots = Spots(a["x"], a["rows"], a["cols"], a["xy"])
    tr = a["train"]
    train, y = spots.subset(tr), a["y"][tr]
    out = dict(a)
    # 1. the benchmark's adapter, --quick, every method: protocol R (query = every spot) ...
    for m in methods.ALL_METHODS:
        task = methods.Task(train, y, spots, seed=3, quick=True, grid="square")
        out[f"R/{m}"] = methods.predict(m, task)[0]
    # ... with two training sections (the methods that read groups)
    for m in ("histogene", "thitogene", "histosge"):
        task = methods.Task(train, y, spots, seed=3, quick=True, grid="square", train_groups=a["groups"][tr],
                            query_groups=a["groups"])
        out[f"Rg/{m}"] = methods.predict(m, task)[0]
    # ... with query positions outside the training grid (position tables span both)
    inner = a["train_inner"]
    for m in ("histogene", "thitogene"):
        task = methods.Task(spots.subset(inner), a["y"][inner], spots, seed=3, quick=True, grid="square")
        out[f"Redge/{m}"] = methods.predict(m, task)[0]
    # ... and protocol X's position handling (another section: positions zeroed; histosge is
    # held by tests/test_model_golden.py there, through a model file)
    dummy = ad.AnnData(np.zeros((len(spots), 1), np.float32))
    for m in methods.ALL_METHODS:
        if not methods.valid_for(m, "X") or m == "histosge":
            continue
        task = methods.Task(train, y, spots, seed=3, quick=True, train_groups=a["groups"][tr],
                            query_groups=np.zeros(len(spots), np.int64), query_section=dummy)
        out[f"X/{m}"] = methods.predict(m, task)[0]
    # 2. direct calls with non-default settings (what the classes' parameters must reproduce)
    out["direct/knn_choices"] = baselines.knn(train.xy, y, spots.xy, choices=(2, 5))[0]
    out["direct/ridge_pcs"] = baselines.ridge(train.features, y, spots.features, n_pcs=4)[0]
    out["direct/stnet"] = baselines.stnet(train.features, y, spots.features, seed=1, epochs=4, hidden=32,
                                          patience=2)[0]
    out["direct/histogene"] = baselines.histogene(train, y, spots, train_groups=a["groups"][tr],
                                                  query_groups=a["groups"], seed=2, steps=8, eval_every=2,
                                                  max_tokens=50, dim=32, depth=1, heads=4)[0]
    out["direct/stage_hex"] = baselines_stage.stage(train, y, spots, grid="hex", seed=2, epochs=4)[0]
    out["direct/thitogene"] = baselines_thitogene.thitogene(train, y, spots, train_groups=a["groups"][tr],
                                                            query_groups=a["groups"], seed=2, epochs=2, depth=1,
                                                            arch=SMALL_THITOGENE)[0]
    out["direct/deepspace"] = baselines_deepspace.deepspace(train.features, y, spots.features, seed=2, epochs=4,
                                                            hidden=64)[0]
    out["torch_threads"] = np.array(1)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(out)} arrays)")


if __name__ == "__main__":
    main()
