"""``deepspace``: DeepSpaCE (Monjo et al., Sci Rep 2022) on frozen encoder features.

The published model is torchvision's ImageNet VGG16 whose last layer is replaced by one output
per gene, fine-tuned end to end on 224 px spot images (the authors' experiment script,
``run_DeepSpaCE_GridSearch.py``: every layer trained, Adam lr 1e-4 and weight decay 1e-4,
batch 128, at most 50 epochs, flip/crop/colour augmentation). Its targets are each gene's
normalised expression min-max scaled to [0, 1] over the spots, its loss the smooth L1 (Huber,
beta 1) per gene averaged over genes. One fold of a seeded 5-fold split of the training spots
validates: training stops once the validation loss has failed to fall below the previous
epoch's for 5 epochs in a row, and the epoch with the best validation correlation (mean
per-gene Pearson) is kept; epoch 0 only evaluates the untrained network.

Here, as for every baseline of this harness, the image network up to VGG16's classifier is our
frozen encoder, so what trains is VGG16's classifier on top of it: features -> 4096 -> ReLU ->
dropout 0.5 -> 4096 -> ReLU -> dropout 0.5 -> genes (VGG16's own initialisation, normal with
sd 0.01, for the two hidden layers; PyTorch's default for the new output layer, as in the
authors' code). What differs: (1) the encoder is frozen and is ours, not a fine-tuned VGG16,
and the two hidden layers start from random weights (ImageNet's classifier weights expect
VGG16's 25,088 convolutional features, not ours); (2) no image augmentation (features are
cached); (3) no filter on the whiteness of the spot image (the authors drop spots whose image
is mostly background, their ``quantileRGB``); (4) the validation correlation is the per-gene
Pearson over all validation spots at once, where the authors average it batch by batch;
(5) predictions are mapped back from [0, 1] to log1p expression with the training spots' per-gene
minimum and maximum, so that MSE and MAE are comparable with the other methods.

``stop_rule=True`` (what ``histosge bench`` trains) replaces the authors' validation and stop by
the benchmark's shared rule (``model.early_stop``) inside their 50 epochs: its validation spots
instead of the first fold, the mean squared error of the predictions mapped back to log1p as the
validation loss, and the weights of the epoch with the lowest loss kept (not the best correlation).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..errors import InputError
from ..evaluate import pearson_per_gene
from ..model import Spots
from ..model.parts import nest, sub
from ..model.scaling import FeatureScaler
from ._registry import builtin
from ._torch import MIN_DELTA, PATIENCE, EarlyStopping, adam, load_net, mse, net_state, seed_all, validation_split
from .base import Method, check_fit_inputs

#: The authors' schedule (run_DeepSpaCE_GridSearch.py and DeepSpaCE.py defaults).
EPOCHS = 50
EARLY_STOP = 5
N_FOLDS = 5


class DeepSpaCEHead(nn.Module):
    """VGG16's classifier (two 4096-wide hidden layers) with one output per gene."""

    def __init__(self, feature_dim: int, n_genes: int, *, hidden: int = 4096, dropout: float = 0.5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(feature_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, n_genes),
        )
        for layer in (self.net[0], self.net[3]):  # torchvision's VGG initialisation of its classifier
            nn.init.normal_(layer.weight, 0, 0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def validation_fold(n: int, seed: int, n_folds: int = N_FOLDS) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: the first fold of a seeded, shuffled ``n_folds``-fold split."""
    from sklearn.model_selection import KFold

    if n < n_folds:
        raise InputError(f"DeepSpaCE needs at least {n_folds} training spots, got {n}", where="training spots",
                         fix="use more spots")
    train, val = next(iter(KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.arange(n))))
    return train, val


@builtin("deepspace")  # its spec: methods/_builtin.py
class DeepSpaCE(Method):
    """At most ``epochs`` epochs, stopping after ``early_stop`` epochs in a row without a lower
    validation loss than the epoch before; ``hidden`` and ``dropout`` of the two hidden layers;
    Adam (``lr``, ``weight_decay``), batches of ``batch_size``. ``info``: ``epochs_run``,
    ``best_epoch`` (0 = the untrained network) and ``best_val_pcc``; ``stop_rule``: the
    benchmark's early stop instead (module docstring; ``info`` has ``best_val_loss`` then)."""

    @classmethod
    def stop_rule_params(cls) -> dict:
        return {"stop_rule": True}

    def __init__(self, *, epochs: int = EPOCHS, early_stop: int = EARLY_STOP, hidden: int = 4096,
                 dropout: float = 0.5, lr: float = 1e-4, weight_decay: float = 1e-4, batch_size: int = 128,
                 stop_rule: bool = False, seed: int = 0):
        super().__init__(seed=seed)
        self.stop_rule = bool(stop_rule)
        self.epochs, self.early_stop, self.hidden, self.dropout = int(epochs), int(early_stop), int(hidden), \
            float(dropout)
        self.lr, self.weight_decay, self.batch_size = float(lr), float(weight_decay), int(batch_size)

    @classmethod
    def schedule(cls, *, epochs=None, patience=None, group_size=None) -> dict:
        """``--patience`` is DeepSpaCE's ``early_stop``."""
        out = super().schedule(epochs=epochs, group_size=group_size)
        return out | ({"early_stop": int(patience)} if patience is not None else {})

    def fit(self, train: Spots, y: np.ndarray, *, groups: np.ndarray | None = None) -> DeepSpaCE:
        y = check_fit_inputs(train, y, groups)
        seed_all(self.seed)
        rng = np.random.default_rng(self.seed)
        self.scaler_ = FeatureScaler(train.features)
        x_train = self.scaler_.transform(train.features)
        self.low_, high = y.min(0), y.max(0)
        self.span_ = np.where(high - self.low_ > 0, high - self.low_, 1.0).astype(np.float32)
        target = (y - self.low_) / self.span_  # each gene min-max scaled to [0, 1] over the training spots
        if self.stop_rule:
            tr, va = validation_split(len(x_train), rng)
        else:
            tr, va = validation_fold(len(x_train), self.seed)

        net = DeepSpaCEHead(x_train.shape[1], y.shape[1], hidden=self.hidden, dropout=self.dropout)
        opt = adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        xt, yt = torch.from_numpy(x_train), torch.from_numpy(np.ascontiguousarray(target))
        x_val, t_val = xt[va], yt[va]

        def validate() -> tuple[float, float]:
            net.eval()
            with torch.no_grad():
                out = net(x_val)
            if self.stop_rule:  # the rule's loss: MSE of the predictions mapped back to log1p
                return mse(out.numpy() * self.span_ + self.low_, y[va]), float("nan")
            loss = float(nn.functional.smooth_l1_loss(out, t_val))
            return loss, float(np.nan_to_num(pearson_per_gene(target[va], out.numpy()), nan=0.0).mean())

        stop = EarlyStopping(PATIENCE, min_delta=MIN_DELTA)
        loss_prev, stale = float("inf"), 0
        best_pcc, best_epoch, best_state = -float("inf"), 0, None
        epoch = 0
        for epoch in range(self.epochs + 1):  # epoch 0 evaluates the untrained network, as the authors' loop does
            if epoch > 0:
                net.train()
                order = torch.from_numpy(rng.permutation(tr))
                for b in order.split(self.batch_size):
                    loss = nn.functional.smooth_l1_loss(net(xt[b]), yt[b])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            val_loss, val_pcc = validate()
            if self.stop_rule:
                if epoch == 0:
                    stop.start(val_loss, net)
                elif stop.step(val_loss, net):
                    break
                continue
            if val_pcc > best_pcc:
                best_pcc, best_epoch, best_state = val_pcc, epoch, copy.deepcopy(net.state_dict())
            stale = 0 if val_loss < loss_prev else stale + 1
            if stale == self.early_stop:
                break
            loss_prev = val_loss
        if self.stop_rule:
            stop.restore(net)
            self.info = {"epochs_run": epoch, **stop.record()}
        else:
            net.load_state_dict(best_state)
            self.info = {"epochs_run": epoch, "best_epoch": best_epoch, "best_val_pcc": best_pcc}
        self.net_ = net.eval()
        return self

    def predict(self, query: Spots, *, groups: np.ndarray | None = None) -> np.ndarray:
        """Predictions in [0, 1] per gene, mapped back to log1p with the training minimum and span."""
        self.check_fitted()
        with torch.no_grad():
            scaled = self.net_(torch.from_numpy(self.scaler_.transform(query.features))).numpy()
        return (scaled * self.span_ + self.low_).astype(np.float32)

    def state(self):
        first, last = self.net_.net[0], self.net_.net[-1]
        return (net_state(self.net_) | nest("scaler", self.scaler_.state()) | {"low_": self.low_, "span_": self.span_},
                {"feature_dim": first.in_features, "n_genes": last.out_features})

    def set_state(self, arrays, meta) -> None:
        self.low_, self.span_ = arrays["low_"], arrays["span_"]
        self.scaler_ = FeatureScaler.from_state(sub(arrays, "scaler"))
        net = DeepSpaCEHead(int(meta["feature_dim"]), int(meta["n_genes"]), hidden=self.hidden, dropout=self.dropout)
        self.net_ = load_net(net, arrays)
