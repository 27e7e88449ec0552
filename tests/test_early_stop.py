"""The one early-stop rule (histosge.model.early_stop) and the methods that train by it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from histosge.benchmark import methods as adapter
from histosge.benchmark.runner import _clean
from histosge.methods import create_method, get_spec, list_methods
from histosge.model import DEFAULT_NETWORK, PAPER_CONFIG, Spots
from histosge.model.early_stop import MIN_DELTA, PATIENCE, VAL_FRACTION, EarlyStopping, validation_split

GOLDEN = Path(__file__).parent / "golden" / "methods_golden.npz"
SMALL_THITOGENE = {"caps": 4, "route_dim": 16, "heads": 4, "gat_heads": 2, "gat_hidden": 32, "gat_out": 32,
                   "dim": 32}
NEURAL = ("stnet", "histogene", "stage", "thitogene", "deepspace", "histosge", "histosge-image", "histosge-paper")


def test_stops_after_patience_epochs_without_a_better_loss_and_keeps_the_best_weights():
    net = nn.Linear(2, 1)
    stop = EarlyStopping(3)
    stop.start(10.0, net)
    losses = [9.0, 8.0, 8.0 * (1 - MIN_DELTA / 2), 7.99, 7.99, 100.0]  # epoch 3 and 4 are not better by 0.5%
    done = []
    for epoch, loss in enumerate(losses, 1):
        if epoch == 2:
            with torch.no_grad():
                net.weight.fill_(2.0)
            best_weight = net.weight.detach().clone()
        done.append(stop.step(loss, net))
        if done[-1]:
            break
        with torch.no_grad():
            net.weight.fill_(-epoch)
    assert done == [False, False, False, False, True]
    assert stop.best_epoch == 2 and stop.best == 8.0 and stop.epochs == 5
    stop.restore(net)
    assert torch.equal(net.weight, best_weight)
    assert stop.record() == {"best_epoch": 2, "best_val_loss": 8.0,
                             "stopped": "no better validation loss for 3 epochs"}


def test_the_starting_weights_are_a_candidate_and_give_up_ends_a_network_that_never_beats_them():
    net = nn.Linear(2, 1)
    stop = EarlyStopping(10, give_up=2)
    stop.start(1.0, net)
    assert not stop.step(1.5, net)
    assert stop.step(1.2, net) and stop.best_epoch == 0 and "beat the untrained" in stop.stopped


def test_validation_split_is_seeded_disjoint_and_never_empty_or_whole():
    tr, va = validation_split(50, np.random.default_rng(3))
    assert len(va) == round(50 * VAL_FRACTION) and not set(tr) & set(va) and len(tr) + len(va) == 50
    assert np.array_equal(va, validation_split(50, np.random.default_rng(3))[1])
    assert [len(v) for _, v in (validation_split(n, np.random.default_rng(0)) for n in (1, 2, 3))] == [0, 1, 1]


def test_histosge_default_schedule_is_the_rule_and_the_paper_model_gets_it_inside_its_epochs():
    assert (DEFAULT_NETWORK.patience, DEFAULT_NETWORK.val_fraction, DEFAULT_NETWORK.min_delta) == (
        PATIENCE, VAL_FRACTION, MIN_DELTA)
    rule = get_spec("histosge-paper").cls.stop_rule_params()["network"]
    cfg = PAPER_CONFIG.replace(**rule)
    assert (cfg.epochs, cfg.patience, cfg.val_fraction, cfg.min_delta) == (1000, PATIENCE, VAL_FRACTION, MIN_DELTA)
    assert DEFAULT_NETWORK.replace(**get_spec("histosge").cls.stop_rule_params()["network"]) == DEFAULT_NETWORK


def test_the_benchmark_trains_every_network_by_the_rule_except_under_quick():
    spots = Spots(np.zeros((4, 2), np.float32), np.zeros(4), np.zeros(4), np.zeros((4, 2)))
    full = adapter.Task(spots, np.zeros((4, 3), np.float32), spots, grid="hex")
    quick = adapter.Task(spots, np.zeros((4, 3), np.float32), spots, grid="hex", quick=True)
    for name in list_methods():
        spec = get_spec(name)
        rule = spec.cls.stop_rule_params()
        assert bool(rule) == (name in NEURAL or name == "stnet+pooled" or name == "histosge+prior"), name
        params = adapter.params_for(spec, full)
        assert all(params[k] == v for k, v in rule.items()), name
        if spec.quick_epochs:
            assert not (set(rule) - {"network"}) & set(adapter.params_for(spec, quick)), name


def test_records_keep_the_epochs_run_and_the_best_epoch():
    kept = _clean({"epochs_run": 31, "best_epoch": 11, "stopped": "no better validation loss for 20 epochs",
                   "history": {"train_loss": [1.0]}})
    assert kept == {"epochs_run": 31, "best_epoch": 11, "stopped": "no better validation loss for 20 epochs"}


@pytest.fixture(scope="module")
def inputs():
    with np.load(GOLDEN, allow_pickle=False) as z:
        g = {k: z[k] for k in z.files}
    spots = Spots(g["x"], g["rows"], g["cols"], g["xy"])
    return spots, spots.subset(g["train"]), g["y"][g["train"]]


FROZEN = {  # lr 0: the validation loss never moves, so the rule stops after PATIENCE epochs and keeps epoch 0
    "stnet": {"lr": 0.0, "hidden": 16},
    "deepspace": {"lr": 0.0, "hidden": 32},
    "thitogene": {"lr": 0.0, "depth": 1, "arch": SMALL_THITOGENE},
    "histogene": {"lr": 0.0, "dim": 16, "depth": 1, "heads": 2, "steps": 400},
}


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_a_network_that_cannot_improve_stops_after_patience_epochs_and_keeps_its_start(inputs, name):
    spots, train, y = inputs
    params = {**FROZEN[name], **get_spec(name).cls.stop_rule_params(), "seed": 1}
    m = create_method(name, **params).fit(train, y)
    assert m.info["epochs_run"] == PATIENCE and m.info["best_epoch"] == 0, m.info
    assert "no better validation loss" in m.info["stopped"]
    again = create_method(name, **params).fit(train, y)
    assert np.array_equal(m.predict(spots), again.predict(spots))


def test_stage_stops_by_the_rule_and_holds_its_validation_spots_out(inputs):
    spots, train, y = inputs
    m = create_method("stage", grid="square", epochs=400, lr=0.01, stop_rule=True, seed=0).fit(train, y)
    info = m.info
    assert info["epochs_run"] < 400 and info["epochs_run"] == info["best_epoch"] + PATIENCE, info
    plain = create_method("stage", grid="square", epochs=3, seed=0).fit(train, y)
    assert "best_epoch" not in plain.info and plain.info["epochs_run"] == 3
