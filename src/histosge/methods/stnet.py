"""``stnet``: ST-Net (He et al., Nat Biomed Eng 2020), reduced to a head on frozen features.

Original: an ImageNet DenseNet-121 fine-tuned end to end on 224 px spot patches with
flip/rotation augmentation, a linear layer to the log expression of 250 genes, each spot
predicted on its own. Here: the same per-spot regression, but the image network is our frozen
encoder and only a small MLP (features -> 512 -> ReLU -> dropout -> genes) is trained, with
Adam and early stopping on 10% of the training spots (patience 10); ``stop_rule=True`` (what
``histosge bench`` trains) takes the benchmark's shared rule instead (``model.early_stop``: 20%
of the spots, patience 20, 0.5% relative improvement), inside the same 100 epochs. No
augmentation (features are cached). Features are clipped to the training range and standardised
(``model.scaling``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..model import Spots
from ..model.parts import nest, sub
from ..model.scaling import FeatureScaler
from ._registry import builtin
from ._torch import MIN_DELTA, PATIENCE, VAL_FRACTION, EarlyStopping, adam, load_net, net_state, seed_all, val_split
from .base import Method, check_fit_inputs


def _net(feature_dim: int, hidden: int, n_genes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, n_genes))


@builtin("stnet")  # its spec: methods/_builtin.py
class STNet(Method):
    """Adam (``lr``, ``weight_decay``), batches of ``batch_size``, at most ``epochs`` epochs, early
    stopping after ``patience`` epochs without a lower loss on ``val_fraction`` of the training
    spots; ``stop_rule``: the benchmark's rule instead of ``patience`` and ``val_fraction``."""

    def __init__(self, *, epochs: int = 100, patience: int = 10, hidden: int = 512, lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch_size: int = 128, val_fraction: float = 0.1,
                 stop_rule: bool = False, seed: int = 0):
        super().__init__(seed=seed)
        self.epochs, self.patience, self.hidden = int(epochs), int(patience), int(hidden)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.batch_size, self.val_fraction, self.stop_rule = int(batch_size), float(val_fraction), bool(stop_rule)

    @classmethod
    def stop_rule_params(cls) -> dict:
        return {"stop_rule": True}

    def fit(self, train: Spots, y: np.ndarray, *, groups: np.ndarray | None = None) -> STNet:
        y = np.ascontiguousarray(check_fit_inputs(train, y, groups))
        seed_all(self.seed)
        rng = np.random.default_rng(self.seed)
        self.scaler_ = FeatureScaler(train.features)
        x_train = self.scaler_.transform(train.features)
        tr, va = val_split(len(x_train), VAL_FRACTION if self.stop_rule else self.val_fraction, rng)
        net = _net(x_train.shape[1], self.hidden, y.shape[1])
        opt = adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        xt, yt = torch.from_numpy(x_train), torch.from_numpy(y)
        x_val, y_val = xt[va], yt[va]

        def val_loss() -> float:
            net.eval()
            with torch.no_grad():
                return float(nn.functional.mse_loss(net(x_val), y_val))

        stop = EarlyStopping(PATIENCE, min_delta=MIN_DELTA) if self.stop_rule else EarlyStopping(self.patience,
                                                                                                   min_delta=0.0)
        if self.stop_rule:
            stop.start(val_loss(), net)
        epoch = 0
        for epoch in range(1, self.epochs + 1):  # noqa: B007 - epoch is reported
            net.train()
            order = torch.from_numpy(rng.permutation(tr))
            for b in order.split(self.batch_size):
                loss = nn.functional.mse_loss(net(xt[b]), yt[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if stop.step(val_loss(), net):
                break
        stop.restore(net)
        self.net_ = net.eval()
        self.info = {"epochs_run": epoch, **stop.record()}
        return self

    def predict(self, query: Spots, *, groups: np.ndarray | None = None) -> np.ndarray:
        self.check_fitted()
        with torch.no_grad():
            pred = self.net_(torch.from_numpy(self.scaler_.transform(query.features))).numpy()
        return pred.astype(np.float32)

    def state(self):
        first, last = self.net_[0], self.net_[3]
        return (net_state(self.net_) | nest("scaler", self.scaler_.state()),
                {"feature_dim": first.in_features, "n_genes": last.out_features})

    def set_state(self, arrays, meta) -> None:
        self.scaler_ = FeatureScaler.from_state(sub(arrays, "scaler"))
        self.net_ = load_net(_net(int(meta["feature_dim"]), self.hidden, int(meta["n_genes"])), arrays)
