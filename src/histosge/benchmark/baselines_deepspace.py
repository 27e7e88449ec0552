"""DeepSpaCE (Monjo et al., Sci Rep 2022) on frozen encoder features.

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
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from ..evaluate import pearson_per_gene
from ..model.scaling import standardise
from .baselines import _seed

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
        raise ValueError(f"DeepSpaCE needs at least {n_folds} training spots, got {n}")
    train, val = next(iter(KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(np.arange(n))))
    return train, val


def deepspace(
    train_x: np.ndarray,
    y_train: np.ndarray,
    query_x: np.ndarray,
    *,
    seed: int = 0,
    epochs: int = EPOCHS,
    early_stop: int = EARLY_STOP,
    hidden: int = 4096,
    dropout: float = 0.5,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    batch_size: int = 128,
) -> tuple[np.ndarray, dict]:
    """Fit DeepSpaCE's head on ``train_x`` -> ``y_train`` (log1p), predict ``query_x`` (log1p).

    Returns (predictions, info) with ``epochs_run`` (training epochs done), ``best_epoch``
    (0 = the untrained network) and ``best_val_pcc``.
    """
    _seed(seed)
    rng = np.random.default_rng(seed)
    x_train, x_query = standardise(train_x, query_x)
    y = np.asarray(y_train, np.float32)
    low, high = y.min(0), y.max(0)
    span = np.where(high - low > 0, high - low, 1.0).astype(np.float32)
    target = (y - low) / span  # each gene min-max scaled to [0, 1] over the training spots
    tr, va = validation_fold(len(x_train), seed)

    net = DeepSpaCEHead(x_train.shape[1], y.shape[1], hidden=hidden, dropout=dropout)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(np.ascontiguousarray(target))

    def validate() -> tuple[float, float]:
        net.eval()
        with torch.no_grad():
            out = net(xt[va])
            loss = float(nn.functional.smooth_l1_loss(out, yt[va]))
        return loss, float(np.nan_to_num(pearson_per_gene(target[va], out.numpy()), nan=0.0).mean())

    loss_prev, stale = float("inf"), 0
    best_pcc, best_epoch, best_state = -float("inf"), 0, None
    epoch = 0
    for epoch in range(epochs + 1):  # epoch 0 evaluates the untrained network, as the authors' loop does
        if epoch > 0:
            net.train()
            order = rng.permutation(tr)
            for s in range(0, len(order), batch_size):
                b = torch.from_numpy(order[s : s + batch_size])
                loss = nn.functional.smooth_l1_loss(net(xt[b]), yt[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        val_loss, val_pcc = validate()
        if val_pcc > best_pcc:
            best_pcc, best_epoch, best_state = val_pcc, epoch, copy.deepcopy(net.state_dict())
        stale = 0 if val_loss < loss_prev else stale + 1
        if stale == early_stop:
            break
        loss_prev = val_loss
    net.load_state_dict(best_state)
    net.eval()
    with torch.no_grad():
        scaled = net(torch.from_numpy(x_query)).numpy()
    pred = scaled * span + low
    return pred.astype(np.float32), {"epochs_run": epoch, "best_epoch": best_epoch, "best_val_pcc": best_pcc}
