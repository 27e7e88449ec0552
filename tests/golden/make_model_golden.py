"""Write tests/golden/model_golden.npz: the default model's predictions before the model object.

Run once at commit 6eeda76 (before `HisToSGE` existed, e.g. in a worktree of that commit) with
the old entry point ``model.methods.fit_predict``, one torch thread per fit (a network's
training rounds differently with the thread count); the arrays are the reference that ``tests/test_model_golden.py``
holds the refactored model to (max abs difference <= 1e-6). Inputs are stored too (her2st C2,
C3, C4: he-stats features, grid, pixel centres, log1p expression of 64 genes), so the test does
not depend on reading, encoding or HVG selection.

    HISTOSGE_DATA=../shared/data python tests/golden/make_model_golden.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from histosge.model.methods import DEFAULT_CONFIG, Spots, fit_predict

from histosge.benchmark import protocols as P
from histosge.benchmark import sections as S
from histosge.genes import log_normalize
from histosge.model.train import PAPER_CONFIG

N_GENES = 64
OUT = Path(__file__).with_name("model_golden.npz")


def main(data_dir: str) -> None:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    names = ["her2st/C2", "her2st/C3", "her2st/C4"]
    secs = S.load(names, data_dir, progress=False)
    genes, _ = P.cross_section_genes([secs["her2st/C2"].adata, secs["her2st/C3"].adata],
                                     secs["her2st/C4"].adata, N_GENES)
    arrays: dict[str, np.ndarray] = {"genes": np.array(genes)}
    spots = {}
    for name in names:
        s = secs[name]
        key = name.split("/")[1]
        arrays[f"{key}_features"] = s.features
        arrays[f"{key}_rows"] = s.rows
        arrays[f"{key}_cols"] = s.cols
        arrays[f"{key}_xy"] = s.xy
        arrays[f"{key}_y"] = log_normalize(s.adata, genes)
        spots[key] = Spots(s.features, s.rows, s.cols, s.xy)

    c2, y2 = spots["C2"], arrays["C2_y"]

    def sub(sp, idx):
        return Spots(sp.features[idx], sp.rows[idx], sp.cols[idx], sp.xy[idx])

    split_r = P.split_r(len(y2), 0)
    split_g = P.split_g(c2.rows, c2.cols, "square", 4)
    arrays["R_train"], arrays["G_train"] = split_r.train, split_g.train
    cases = {
        "R": (sub(c2, split_r.train), y2[split_r.train], c2, dict(config=DEFAULT_CONFIG)),
        "R_net": (sub(c2, split_r.train), y2[split_r.train], c2,
                  dict(config=DEFAULT_CONFIG.replace(min_val_spots=10, epochs=40))),
        "G": (sub(c2, split_g.train), y2[split_g.train], c2, dict(config=DEFAULT_CONFIG)),
        "paper": (sub(c2, split_r.train), y2[split_r.train], c2,
                  dict(config=PAPER_CONFIG.replace(epochs=15), method="histosge-paper")),
    }
    for name, (train, y, query, kw) in cases.items():
        torch.set_num_threads(1)  # a network's training rounds differently with the thread count
        method = kw.pop("method", "histosge")
        pred, info = fit_predict(method, train, y, query, seed=0, progress=False, **kw)
        arrays[f"pred_{name}"] = pred
        print(name, pred.shape, {k: info.get(k) for k in ("k", "k_genes", "n_components")}, info.get("history"))
    # protocol X: C4 from C2 + C3, positions zeroed as the benchmark runner does
    c3, y3, c4 = spots["C3"], arrays["C3_y"], spots["C4"]
    train = Spots(np.vstack([c2.features, c3.features]), np.zeros(len(y2) + len(y3)), np.zeros(len(y2) + len(y3)),
                  np.vstack([c2.xy, c3.xy]))
    query = Spots(c4.features, np.zeros(len(c4)), np.zeros(len(c4)), c4.xy)
    groups = np.concatenate([np.zeros(len(y2), np.int64), np.ones(len(y3), np.int64)])
    torch.set_num_threads(1)
    pred, info = fit_predict("histosge", train, np.vstack([y2, y3]), query, seed=0, progress=False,
                             cross_section=True, train_groups=groups, query_groups=np.zeros(len(c4), np.int64))
    arrays["pred_X"] = pred
    print("X", pred.shape, info.get("alpha"), info.get("history"))
    arrays["torch_threads"] = np.asarray(torch.get_num_threads())
    np.savez_compressed(OUT, **arrays)
    print(OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else __import__("os").environ["HISTOSGE_DATA"])
