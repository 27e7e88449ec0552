"""Baselines scored on exactly the inputs HisToSGE gets (frozen encoder features, grid positions).

One function per method, each ``(train inputs, y_train, query inputs, seed) -> predictions``
(log1p expression of the HVGs, query spots x genes). The docstrings say how each differs
from the published method: all of them here run on frozen features of one encoder, where
ST-Net and HisToGene trained their image layers end to end on raw pixels.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from ..model import Spots
from ..model.neighbours import choose_k, idw
from ..model.probe import ridge_probe
from ..model.scaling import standardise


def mean(y_train: np.ndarray, n_query: int) -> np.ndarray:
    """Training mean of each gene, predicted for every query spot (Pearson is 0 by construction:
    the floor of MSE/MAE that any method must beat)."""
    return np.repeat(np.asarray(y_train, np.float32).mean(0, keepdims=True), n_query, axis=0)


def knn(train_xy: np.ndarray, y_train: np.ndarray, query_xy: np.ndarray, *, choices=None) -> tuple[np.ndarray, dict]:
    """Inverse-distance-weighted mean of the k nearest training spots (k by leave-one-out CV over
    ``choices``, default ``model.neighbours.K_CHOICES``).

    ``model.neighbours`` as it is: no image at all, so it shows what spatial smoothness alone buys.
    """
    k = choose_k(train_xy, y_train, choices)
    return idw(train_xy, y_train, query_xy, k), {"k": int(k)}


def ridge(
    train_x: np.ndarray, y_train: np.ndarray, query_x: np.ndarray, *, n_pcs: int = 256
) -> tuple[np.ndarray, dict]:
    """HEST-Benchmark's linear probe (``model.probe.ridge_probe``; see there what differs)."""
    return ridge_probe(train_x, y_train, query_x, n_pcs=n_pcs)


# --------------------------------------------------------------------------------------------
# neural baselines


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _val_split(n: int, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    perm = rng.permutation(n)
    n_val = min(max(1, int(round(n * fraction))), n - 1) if n > 1 else 0
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


class _EarlyStop:
    """Keeps the best weights by validation loss; ``step`` returns True when patience runs out."""

    def __init__(self, patience: int):
        self.patience, self.best, self.state, self.since = patience, math.inf, None, 0

    def step(self, loss: float, net: nn.Module) -> bool:
        if loss < self.best - 1e-6:
            self.best, self.since, self.state = loss, 0, copy.deepcopy(net.state_dict())
            return False
        self.since += 1
        return self.since >= self.patience

    def restore(self, net: nn.Module) -> None:
        if self.state is not None:
            net.load_state_dict(self.state)


def stnet(
    train_x: np.ndarray,
    y_train: np.ndarray,
    query_x: np.ndarray,
    *,
    seed: int = 0,
    epochs: int = 100,
    patience: int = 10,
    hidden: int = 512,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 128,
    val_fraction: float = 0.1,
) -> tuple[np.ndarray, dict]:
    """ST-Net (He et al., Nat Biomed Eng 2020), reduced to a head on frozen features.

    Original: an ImageNet DenseNet-121 fine-tuned end to end on 224 px spot patches with
    flip/rotation augmentation, a linear layer to the log expression of 250 genes, each spot
    predicted on its own. Here: the same per-spot regression, but the image network is our frozen
    encoder and only a small MLP (features -> 512 -> ReLU -> dropout -> genes) is trained, with
    Adam and early stopping on 10% of the training spots; no augmentation (features are cached).
    """
    _seed(seed)
    rng = np.random.default_rng(seed)
    x_train, x_query = standardise(train_x, query_x)
    y = np.ascontiguousarray(y_train, np.float32)
    tr, va = _val_split(len(x_train), val_fraction, rng)
    net = nn.Sequential(nn.Linear(x_train.shape[1], hidden), nn.ReLU(), nn.Dropout(0.2), nn.Linear(hidden, y.shape[1]))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y)
    stop = _EarlyStop(patience)
    epoch = 0
    for epoch in range(1, epochs + 1):  # noqa: B007 - epoch is reported
        net.train()
        order = rng.permutation(tr)
        for s in range(0, len(order), batch_size):
            b = torch.from_numpy(order[s : s + batch_size])
            loss = nn.functional.mse_loss(net(xt[b]), yt[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            vloss = float(nn.functional.mse_loss(net(xt[va]), yt[va]))
        if stop.step(vloss, net):
            break
    stop.restore(net)
    net.eval()
    with torch.no_grad():
        pred = net(torch.from_numpy(x_query)).numpy()
    return pred.astype(np.float32), {"epochs_run": epoch, "best_val_loss": stop.best}


class HisToGeneNet(nn.Module):
    """Spot tokens = linear(features) + learned row embedding + learned column embedding,
    a stack of pre-norm transformer layers over all spots of a section, LayerNorm + linear head."""

    def __init__(
        self,
        feature_dim: int,
        n_genes: int,
        n_rows: int,
        n_cols: int,
        *,
        dim: int = 256,
        depth: int = 4,
        heads: int = 8,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.patch = nn.Linear(feature_dim, dim)
        self.row_emb = nn.Embedding(n_rows, dim)
        self.col_emb = nn.Embedding(n_cols, dim)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, heads, 2 * dim, dropout, activation="gelu", batch_first=True, norm_first=True
            )
            for _ in range(depth)
        )
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, n_genes))

    def forward(self, feats: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.patch(feats) + self.row_emb(rows) + self.col_emb(cols))
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def _positions(values: np.ndarray, n: int) -> torch.Tensor:
    return torch.from_numpy(np.clip(np.rint(values), 0, n - 1).astype(np.int64))


def tiles(xy: np.ndarray, max_tokens: int, seed: int = 0) -> list[np.ndarray]:
    """Split spots into spatially compact tiles of about ``max_tokens`` (k-means on positions)."""
    n = len(xy)
    k = int(np.ceil(n / max_tokens))
    if k <= 1:
        return [np.arange(n)]
    from sklearn.cluster import KMeans

    lab = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(np.asarray(xy, np.float64))
    return [np.flatnonzero(lab == i) for i in range(k) if (lab == i).any()]


def histogene(
    train: Spots,
    y_train: np.ndarray,
    query: Spots,
    *,
    train_groups: np.ndarray | None = None,
    query_groups: np.ndarray | None = None,
    seed: int = 0,
    steps: int = 200,
    eval_every: int = 20,
    patience: int = 5,
    max_tokens: int = 256,
    lr: float = 5e-4,
    dim: int = 128,
    depth: int = 2,
    heads: int = 4,
    val_fraction: float = 0.1,
) -> tuple[np.ndarray, dict]:
    """HisToGene (Pang et al., bioRxiv 2021): a ViT whose tokens are the spots of a section.

    Original: each token is the flattened 112 px patch, linearly embedded (no pretrained image
    network), plus learned x and y position embeddings (64 positions each); 4-8 layers of width
    1024 with 16 heads; the sequence is a whole section, one section per step, Adam at 1e-5 for
    100 epochs over ~30 sections.
    Here: tokens are our frozen encoder features, linearly embedded, plus learned row/column
    embeddings of the grid position (rounded to the nearest integer; a table as large as the
    grid). Width ``dim``, ``depth`` layers, ``heads`` heads, and sequences of at most
    ``max_tokens`` spots, to fit a 2-core CPU: whole-section attention over 3,600 DLPFC spots
    costs seconds per step there. A training sequence is the ``max_tokens`` training spots
    nearest a random training spot of one section (a whole her2st section fits in one);
    prediction runs spatially compact tiles of the same size (k-means on positions), each as
    one sequence. 10% of the training spots stay in the sequences but are left out of the loss
    and decide early stopping (every ``eval_every`` steps, ``patience`` evaluations). Positions
    no training spot occupied keep their random initial embedding, as in the original.
    """
    from scipy.spatial import cKDTree

    _seed(seed)
    rng = np.random.default_rng(seed)
    x_train, x_query = standardise(train.features, query.features)
    train_rows, train_cols, train_xy = train.rows, train.cols, np.asarray(train.xy, np.float64)
    query_rows, query_cols, query_xy = query.rows, query.cols, np.asarray(query.xy, np.float64)
    y = np.ascontiguousarray(y_train, np.float32)
    tg = np.zeros(len(x_train), np.int64) if train_groups is None else np.asarray(train_groups)
    qg = np.zeros(len(x_query), np.int64) if query_groups is None else np.asarray(query_groups)
    r0 = float(min(np.min(train_rows), np.min(query_rows)))
    c0 = float(min(np.min(train_cols), np.min(query_cols)))
    n_rows = int(np.ceil(max(np.max(train_rows), np.max(query_rows)) - r0)) + 2
    n_cols = int(np.ceil(max(np.max(train_cols), np.max(query_cols)) - c0)) + 2
    tr_r, tr_c = _positions(train_rows - r0, n_rows), _positions(train_cols - c0, n_cols)
    q_r, q_c = _positions(query_rows - r0, n_rows), _positions(query_cols - c0, n_cols)

    net = HisToGeneNet(x_train.shape[1], y.shape[1], n_rows, n_cols, dim=dim, depth=depth, heads=heads)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    _, va = _val_split(len(x_train), val_fraction, rng)
    is_val = np.zeros(len(x_train), bool)
    is_val[va] = True
    sections = [np.flatnonzero(tg == g) for g in np.unique(tg)]
    trees = [cKDTree(train_xy[idx]) for idx in sections]
    weights = np.array([len(idx) for idx in sections], float)
    val_tiles = [idx[t] for idx in sections for t in tiles(train_xy[idx], max_tokens, seed)]
    val_tiles = [t for t in val_tiles if is_val[t].any()]
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y)

    def run(idx, x, r, c):
        return net(x[idx][None], r[idx][None], c[idx][None])[0]

    stop = _EarlyStop(patience)
    step = 0
    for step in range(1, steps + 1):  # noqa: B007 - step is reported
        net.train()
        s = rng.choice(len(sections), p=weights / weights.sum())
        idx = sections[s]
        if len(idx) > max_tokens:
            centre = np.asarray(train_xy)[idx[rng.integers(len(idx))]]
            idx = idx[np.sort(trees[s].query(centre, k=max_tokens)[1])]
        fit = torch.from_numpy(~is_val[idx])
        if not fit.any():
            continue
        loss = nn.functional.mse_loss(run(idx, xt, tr_r, tr_c)[fit], yt[idx][fit])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if val_tiles and (step % eval_every == 0 or step == steps):
            net.eval()
            with torch.no_grad():
                err = sum(
                    float(((run(t, xt, tr_r, tr_c)[torch.from_numpy(is_val[t])] - yt[t][is_val[t]]) ** 2).sum())
                    for t in val_tiles
                )
            if stop.step(err / (is_val.sum() * y.shape[1]), net):
                break
    stop.restore(net)
    net.eval()
    out = np.zeros((len(x_query), y.shape[1]), np.float32)
    xq = torch.from_numpy(x_query)
    with torch.no_grad():
        for g in np.unique(qg):
            idx = np.flatnonzero(qg == g)
            for t in tiles(query_xy[idx], max_tokens, seed):
                out[idx[t]] = run(idx[t], xq, q_r, q_c).numpy()
    return out, {"steps_run": step, "best_val_loss": stop.best}
