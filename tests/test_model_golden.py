"""The model object reproduces the predictions of the code it replaced (tests/golden/).

``tests/golden/make_model_golden.py`` wrote the reference with ``model.methods.fit_predict`` at
commit 6eeda76, before ``HisToSGE`` existed; inputs are stored with it, so this test holds the
model alone: max abs difference <= 1e-6 for protocols R, G, X and the paper's model, fitted
fresh and after a save/load round trip, against the reference of this CPU family
(tests/golden_refs.py) (numpy's BLAS and einsum round the last bit differently
with the memory alignment of their inputs, so reloaded arrays agree to ~1e-7, not bit for bit).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from golden_refs import check, references

from histosge.model import PAPER_CONFIG, HisToSGE, Spots

GOLDEN = Path(__file__).parent / "golden" / "model_golden.npz"
TOL = 1e-6


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def refs():
    """The golden and its other CPU families' references (tests/golden_refs.py)."""
    return references(GOLDEN)


@pytest.fixture(autouse=True)
def one_thread(golden):
    """As the reference was made: one torch thread (training rounds differently with more)."""
    old, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(int(golden["torch_threads"]))
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.set_num_threads(old)
    torch.use_deterministic_algorithms(old_det)


def _spots(g, key, idx=None, zero=False):
    s = Spots(g[f"{key}_features"], g[f"{key}_rows"], g[f"{key}_cols"], g[f"{key}_xy"])
    if zero:
        s = Spots(s.features, np.zeros(len(s)), np.zeros(len(s)), s.xy)
    return s if idx is None else s.subset(idx)


def _fit(model, g, train, y, **kw):
    model.genes_ = [str(x) for x in g["genes"]]
    model.encoder_ = {"encoder": "he-stats", "weights_id": "he-stats/1", "patch_um": 200.0}
    return model.fit_spots(train, y, progress=False, **kw)


CASES = {
    "R": ({}, "R_train"),
    "R_net": ({"network": {"min_val_spots": 10, "epochs": 40}}, "R_train"),
    "G": ({}, "G_train"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_within_section_matches_golden(golden, refs, case, tmp_path):
    params, split = CASES[case]
    g = golden
    idx = g[split]
    model = _fit(HisToSGE("neighbours", **params), g, _spots(g, "C2", idx), g["C2_y"][idx])
    pred = model.predict_spots(_spots(g, "C2"))
    check(pred, GOLDEN, refs, f"pred_{case}", atol=TOL)
    model.save(tmp_path / "m.histosge")
    again = HisToSGE.load(tmp_path / "m.histosge").predict_spots(_spots(g, "C2"))
    # not bit-equal: BLAS and einsum round differently with the arrays' memory alignment
    assert np.abs(again - pred).max() <= TOL


def test_paper_model_matches_golden(golden, refs):
    g = golden
    idx = g["R_train"]
    model = _fit(HisToSGE.paper(network=PAPER_CONFIG.replace(epochs=15)), g, _spots(g, "C2", idx), g["C2_y"][idx])
    check(model.predict_spots(_spots(g, "C2")), GOLDEN, refs, "pred_paper", atol=TOL)


def test_image_mode_matches_golden_through_a_file(golden, refs, tmp_path):
    g = golden
    train = [_spots(g, "C2"), _spots(g, "C3")]
    both = Spots(*(np.concatenate([getattr(s, f) for s in train]) for f in ("features", "rows", "cols", "xy")))
    groups = np.concatenate([np.zeros(len(train[0]), np.int64), np.ones(len(train[1]), np.int64)])
    model = _fit(HisToSGE("image"), g, both, np.vstack([g["C2_y"], g["C3_y"]]), groups=groups)
    path = tmp_path / "x.histosge"
    model.save(path)
    pred = HisToSGE.load(path).predict_spots(_spots(g, "C4"))
    check(pred, GOLDEN, refs, "pred_X", atol=TOL)
