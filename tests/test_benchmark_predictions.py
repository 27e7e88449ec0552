"""benchmark.predictions: a task's predictions written to a file and read back whole."""

import numpy as np

from histosge.benchmark import predictions as PR


def test_saved_predictions_read_back_as_written(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.random((6, 3), dtype=np.float32)
    labels = np.array(["L1", None, "L2", "L1", None, "L2"], dtype=object)
    saved = PR.Saved("dlpfc/151673", "R+", 0, ["A", "B", "C"], y, np.array([0, 2, 4]), np.array([1, 3, 5]),
                     rng.random((6, 2)), labels, {"knn": y[[1, 3, 5]] + 1, "ridge+pooled": y[[1, 3, 5]]},
                     {"stagate": {"measured": np.arange(6), "knn": np.zeros(6, np.int64)}}, "same patient")
    path = PR.save(tmp_path, saved)
    assert path.name == "dlpfc_151673_R+_0_same-patient.npz"
    back = PR.load(path)
    assert (back.name, back.protocol, back.seed, back.genes, back.prior_from) == (
        "dlpfc/151673", "R+", 0, ["A", "B", "C"], "same patient")
    assert list(back.pred) == ["knn", "ridge+pooled"] and np.array_equal(back.pred["knn"], saved.pred["knn"])
    assert np.array_equal(back.y, y) and list(back.labels) == list(labels)
    assert np.array_equal(back.domains["stagate"]["knn"], np.zeros(6))
    (entry,) = PR.index(tmp_path)
    assert entry["dataset"] == "dlpfc" and entry["clusterers"] == ["stagate"] and entry["path"] == path
    assert PR.exists(tmp_path) and not PR.exists(tmp_path / "other")
