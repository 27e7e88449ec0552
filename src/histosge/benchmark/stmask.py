"""STMask, the third clusterer of the HisToSGE paper's Figure 5, built from its paper and code.

STMask ("Dimensionality Reduction and Denoising of Spatial Transcriptomics Data Using
Dual-channel Masked Graph Auto-encoder", Fang, Min et al., the HisToSGE authors' group; code at
github.com/donghaifang/STMask, published later as SpaMask, PLoS Comput Biol 2025) learns a spot
embedding with one graph encoder shared by two self-supervised channels, then clusters it:

- input: the expression scaled per gene (``sc.pp.scale``) and reduced to 200 principal
  components (their ``load_feat(model="pca")``, scikit-learn's PCA, random state 42);
- graph: each spot's 12 nearest spots (``k_cutoff=12``, ``graph_model="KNN"``) plus itself;
- encoder: two GCN layers (200 -> 512 -> 256), each followed by BatchNorm and one shared PReLU;
- feature channel: 20% of the spots (a new random draw each epoch) get a learned mask token added
  to their input; their encodings go through a linear map (256 -> 256, no bias), are set to 0
  again (re-masking) and decoded by a GCN layer (256 -> 200); the loss is the scaled cosine error
  (1 - cos)^2 between decoded and input features of the masked spots;
- topology channel: 20% of the edges are dropped (Bernoulli per edge), the rest made undirected,
  the unmasked input encoded on that graph; a decoder (dropout 0.5 on the product of the two
  ends' encodings, 256 -> 512 -> ReLU -> 1) must tell the dropped edges (positives) from as
  many random spot pairs (negatives), with binary cross-entropy;
- loss = feature loss + 1.3 x topology loss, Adam (lr 1e-3, weight decay 2e-4), gradient norm
  clipped at 5, 500 full-batch epochs;
- clustering: the encoder's embedding of the unmasked graph (eval mode), PCA to 30, k-means
  (100 starts, 1000 iterations, tolerance 1e-6).

These are the settings of the authors' DLPFC script (``RUN_Train_DLPFC.py``); the paper's text
describes the same two channels. What differs here: (1) the input is the benchmark's 1000 HVGs
in log1p (the expression every clusterer of ``benchmark.domains`` gets; the authors pick 2000
HVGs from counts normalised to 1e6), scaled and reduced to 200 components as theirs; (2) seeded
through ``seed`` (torch's and k-means' generators; the authors fix 2023 for torch and leave
k-means to numpy's global state); (3) no R: k-means, as their DLPFC script uses.
"""

from __future__ import annotations

import numpy as np

#: The authors' DLPFC settings (RUN_Train_DLPFC.py over stMask.utils.build_args).
SETTINGS = {"n_pcs_in": 200, "k_neighbours": 12, "hidden": 512, "latent": 256, "epochs": 500, "lr": 1e-3,
            "weight_decay": 2e-4, "clip": 5.0, "feat_mask_rate": 0.2, "edge_drop_rate": 0.2, "lam": 1.3,
            "alpha": 2.0, "fc_dropout": 0.5, "n_pcs_out": 30}


def _graph(xy: np.ndarray, k: int):
    """Edges (2, E) of each spot's ``k`` nearest spots plus itself, as the authors' KNN graph."""
    import torch
    from sklearn.neighbors import NearestNeighbors

    n = len(xy)
    k = min(k, n - 1)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(xy).kneighbors(xy)
    src = np.repeat(np.arange(n), k + 1)
    dst = idx.reshape(-1)
    pairs = np.unique(np.concatenate([np.column_stack([src, dst]), np.column_stack([np.arange(n)] * 2)]), axis=0)
    return torch.from_numpy(pairs.T.astype(np.int64).copy())


def _net(d_in: int, s: dict):
    import torch
    from torch import nn
    from torch_geometric.nn import GCNConv

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = GCNConv(d_in, s["hidden"]), nn.BatchNorm1d(s["hidden"])
            self.conv2, self.bn2 = GCNConv(s["hidden"], s["latent"]), nn.BatchNorm1d(s["latent"])
            self.act = nn.PReLU()

        def forward(self, x, edges):
            return self.act(self.bn2(self.conv2(self.act(self.bn1(self.conv1(x, edges))), edges)))

    class STMaskNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = Encoder()
            self.token = nn.Parameter(torch.zeros(1, d_in))
            self.to_decoder = nn.Linear(s["latent"], s["latent"], bias=False)
            nn.init.xavier_uniform_(self.to_decoder.weight)
            self.feature_decoder = GCNConv(s["latent"], d_in)
            self.edge_decoder = nn.Sequential(nn.Dropout(s["fc_dropout"]), nn.Linear(s["latent"], 2 * s["latent"]),
                                              nn.ReLU(), nn.Linear(2 * s["latent"], 1))

    return STMaskNet()


def _losses(net, x, edges, s: dict):
    """(feature loss, edge loss) of one epoch; every random draw comes from torch's generator."""
    import torch
    import torch.nn.functional as F
    from torch_geometric.utils import to_undirected

    n = x.shape[0]
    masked = torch.randperm(n)[: int(s["feat_mask_rate"] * n)]
    x_in = x.clone()
    x_in[masked] += net.token
    keep = torch.bernoulli(torch.full((edges.shape[1],), 1 - s["edge_drop_rate"])).to(torch.bool)
    kept, dropped = to_undirected(edges[:, keep]), edges[:, ~keep]
    rec = net.to_decoder(net.encoder(x_in, edges))
    rec[masked] = 0  # re-masking: the decoder sees only the neighbours of a masked spot
    rec = net.feature_decoder(rec, edges)
    cos = (F.normalize(x[masked], dim=-1) * F.normalize(rec[masked], dim=-1)).sum(-1)
    feature_loss = (1 - cos).pow(s["alpha"]).mean()
    h = net.encoder(x, kept)
    negatives = torch.randint(0, n, (2, dropped.shape[1]))

    def score(pairs):
        return net.edge_decoder(h[pairs[0]] * h[pairs[1]])

    pos, neg = torch.sigmoid(score(dropped)), torch.sigmoid(score(negatives))
    edge_loss = F.binary_cross_entropy(pos, torch.ones_like(pos)) + F.binary_cross_entropy(neg, torch.zeros_like(neg))
    return feature_loss, edge_loss


def embedding(expression: np.ndarray, xy: np.ndarray, seed: int = 0, *, epochs: int | None = None) -> np.ndarray:
    """STMask's spot embedding (spots x 256) of ``expression`` on the spots' graph (module docstring)."""
    import torch
    from sklearn.decomposition import PCA

    s = dict(SETTINGS)
    x = np.asarray(expression, np.float64)
    sd = x.std(0)
    x = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
    n_in = max(1, min(s["n_pcs_in"], x.shape[0] - 1, x.shape[1]))
    feats = torch.from_numpy(PCA(n_components=n_in, random_state=42).fit_transform(x).astype(np.float32))
    edges = _graph(np.asarray(xy, np.float64), s["k_neighbours"])
    torch.manual_seed(seed)
    net = _net(feats.shape[1], s)
    opt = torch.optim.Adam(net.parameters(), lr=s["lr"], weight_decay=s["weight_decay"])
    for _ in range(s["epochs"] if epochs is None else int(epochs)):
        net.train()
        opt.zero_grad()
        feature_loss, edge_loss = _losses(net, feats, edges, s)
        (feature_loss + s["lam"] * edge_loss).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), s["clip"])
        opt.step()
    net.eval()
    with torch.no_grad():
        return net.encoder(feats, edges).numpy().astype(np.float64)


def cluster(expression: np.ndarray, xy: np.ndarray, k: int, seed: int = 0, *, epochs: int | None = None) -> np.ndarray:
    """STMask domains: the embedding, PCA to 30, k-means with the authors' settings."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    emb = embedding(expression, xy, seed, epochs=epochs)
    if emb.shape[1] > 64:  # as the authors' process(): reduce a wide embedding first
        emb = PCA(n_components=min(SETTINGS["n_pcs_out"], emb.shape[0] - 1), random_state=seed).fit_transform(emb)
    return KMeans(n_clusters=k, n_init=100, max_iter=1000, tol=1e-6, random_state=seed).fit_predict(emb)
