"""The report's figures, drawn from the saved predictions of a benchmark folder (``predictions``).

Marker genes (measured vs each method, held-out spots), spatial domains (k-means of training spots
measured + held-out spots predicted, next to the manual layers), and, where STAGATE ran, the
paper's Figure 5 (k-means, Leiden and STAGATE domain maps side by side; ``ari_chart``: its bar
chart of ARIs per clusterer and method). PNGs are kept small: they are
committed next to the report.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .. import datasets
from .._atomic import atomic_path
from ..evaluate import domains_ari
from . import domains as D
from . import predictions as PR
from .protocols import protocols
from .results import method_order

#: Marker genes drawn per section: the first of its dataset's (``datasets.Dataset.markers``) that
#: are among the HVGs of the protocol's training spots.
N_MARKERS = 3
#: Figures are kept below this size (they are committed next to the report).
MAX_PNG_BYTES = 290_000
_KINDS = ("markers", "domains", "figure5")
#: The protocol a dataset's marker and domain figures are drawn from, by preference.
_PICK = ("G", "R", "X")
_MANUAL = "manual annotation"
_NAMES = D.NAMES
#: Clusterers beyond k-means whose domains a task may have saved (figure 5 needs one of them).
_EXTRA = tuple(c for c in D.CLUSTERERS if c != "kmeans")


def _protocols() -> list[str]:
    """The protocols whose tasks are drawn (no cohort), in report order."""
    return [p.name for p in protocols() if not p.cohort]


def _markers(dataset: str) -> tuple[str, ...]:
    entry = datasets.get_dataset(dataset)
    return entry.markers if entry is not None else ()


def _manual(dataset: str) -> bool:
    """The dataset's labels are a manual annotation (``datasets.Dataset.labels``): domain figures
    compare against them (her2st's are clusters of expression). A dataset not registered: taken as manual."""
    entry = datasets.get_dataset(dataset)
    return entry is None or entry.labels == _MANUAL


def _datasets(names: set[str]) -> list[str]:
    """``names`` in the registry's order, the unregistered ones last."""
    known = datasets.list_datasets()
    return sorted(names, key=lambda n: (known.index(n) if n in known else len(known), n))


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def write_small_png(image, path: Path) -> None:
    """Write a PIL image as a palette PNG (plots have few colours), halving it until small enough."""
    from PIL import Image

    img = image.convert("RGB")
    while True:
        buf = io.BytesIO()
        img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(buf, format="png", optimize=True)
        if buf.tell() <= MAX_PNG_BYTES or min(img.size) < 200:
            break
        img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.Resampling.LANCZOS)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def _save_png(fig, path: Path) -> None:
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=72, format="png")
    buf.seek(0)
    write_small_png(Image.open(buf), path)


def _scatter(ax, xy, values, vmin, vmax, size, title):
    ax.scatter(xy[:, 0], xy[:, 1], c=values, s=size, vmin=vmin, vmax=vmax, cmap="viridis", linewidths=0)
    ax.set_title(title, fontsize=8)
    ax.set_aspect("equal")
    ax.invert_yaxis()
    ax.set_xticks([])
    ax.set_yticks([])


def _mixed(s: PR.Saved, method: str) -> np.ndarray:
    """Training spots measured, scored spots as ``method`` predicted them (X: every spot predicted)."""
    mixed = s.y.copy()
    mixed[s.test] = s.pred[method]
    return mixed


def marker_figure(s: PR.Saved, path: Path) -> list[str] | None:
    """Rows: marker genes; columns: measured, then each method, on the scored spots."""
    markers = [g for g in _markers(s.dataset) if g in s.genes][:N_MARKERS]
    if not markers:
        return None
    plt = _plt()
    methods = method_order(s.pred)
    test = s.test
    xy = s.xy[test]
    size = max(1.0, 3000.0 / max(len(test), 1))
    fig, axes = plt.subplots(
        len(markers), len(methods) + 1, figsize=(1.7 * (len(methods) + 1), 1.9 * len(markers)), squeeze=False
    )
    for i, gene in enumerate(markers):
        j = s.genes.index(gene)
        truth = s.y[test, j]
        vmin, vmax = np.percentile(truth, [1, 99])
        _scatter(axes[i, 0], xy, truth, vmin, vmax, size, f"{gene} measured")
        for c, m in enumerate(methods, start=1):
            p = s.pred[m][:, j]
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.corrcoef(truth, p)[0, 1] if np.std(p) > 1e-9 and np.std(truth) > 1e-9 else float("nan")
            _scatter(axes[i, c], xy, p, vmin, vmax, size, f"{m} (r={r:.2f})")
    fig.suptitle(
        f"{s.name}, protocol {s.protocol}: held-out spots, log1p expression (colour scale of the measured values)",
        fontsize=9,
    )
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)
    return markers


def _clusters(expression: np.ndarray, k: int, seed: int, n_pcs: int = 30) -> np.ndarray:
    """k-means labels with the settings of ``evaluate.domains_ari``, for drawing only
    (the ARI numbers come from ``evaluate.domains_ari`` itself)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    X = np.asarray(expression, np.float64)
    n_pcs = max(1, min(n_pcs, X.shape[0] - 1, X.shape[1]))
    pcs = PCA(n_components=n_pcs, random_state=seed).fit_transform(X - X.mean(0))
    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(pcs)


def domains_figure(s: PR.Saved, path: Path, seed: int = 0) -> bool:
    """Manual layers, k-means on measured expression, k-means on training + predicted spots per method."""
    labels = s.labels
    if labels is None or not _manual(s.dataset):
        return False
    from sklearn.metrics import adjusted_rand_score

    plt = _plt()
    known = np.array([v is not None for v in labels])
    cats = sorted({v for v in labels if v is not None})
    k = len(cats)
    lab_idx = np.array([cats.index(v) if v is not None else -1 for v in labels])
    panels = [("manual layers", lab_idx, None)]
    panels.append(("k-means, measured", _clusters(s.y, k, seed), domains_ari(s.y, labels, seed=seed)))
    for m in method_order(s.pred):
        cl = _clusters(_mixed(s, m), k, seed)
        panels.append((f"{m}", cl, adjusted_rand_score(labels[known].astype(str), cl[known])))
    n = len(panels)
    ncol = min(n, 4)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(2.4 * ncol, 2.5 * nrow), squeeze=False)
    size = max(1.0, 3000.0 / s.n)
    for ax, (title, lab, ari) in zip(axes.flat, panels, strict=False):
        ok = lab >= 0
        ax.scatter(s.xy[ok, 0], s.xy[ok, 1], c=lab[ok], s=size, cmap="tab10", vmin=0, vmax=9, linewidths=0)
        ax.set_title(title if ari is None else f"{title} (ARI {ari:.2f})", fontsize=8)
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    what = ("training spots measured + held-out spots predicted" if s.protocol != "X"
            else "every spot predicted from other sections")
    fig.suptitle(f"{s.name}, protocol {s.protocol}: spatial domains (k-means, k={k}); {what}", fontsize=9)
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)
    return True


def _match(clusters: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Relabel ``clusters`` so each maps to the manual layer it overlaps most (colours comparable
    across panels); clusters left over keep numbers after the layers'."""
    from scipy.optimize import linear_sum_assignment

    ok = D.known(labels)
    cats = sorted({str(v) for v in labels[ok]})
    lab = np.array([cats.index(str(v)) for v in labels[ok]])
    ids = np.unique(clusters)
    overlap = np.array([[np.sum((clusters[ok] == c) & (lab == j)) for j in range(len(cats))] for c in ids])
    rows, cols = linear_sum_assignment(-overlap)
    mapping = {ids[r]: c for r, c in zip(rows, cols, strict=True)}
    spare = iter(range(len(cats), len(cats) + len(ids)))
    return np.array([mapping[c] if c in mapping else next(spare) for c in clusters])


def domain_maps(s: PR.Saved, path: Path) -> bool:
    """The paper's Figure 5 for one task: rows k-means, then Leiden and STAGATE where they ran;
    columns manual layers, measured, each method (k-means of seed ``s.seed``); False where
    neither Leiden nor STAGATE ran."""
    found = s.domains
    labels = s.labels
    extra = [c for c in _EXTRA if c in found]
    if not extra or labels is None:
        return False
    k = D.n_domains(labels)
    columns = ["measured", *[m for m in method_order(s.pred) if all(m in found[c] for c in extra)]]

    def kmeans_of(key):
        if key == "measured":
            return D.kmeans(s.y, k, s.seed)
        mixed = _mixed(s, key)
        if np.ptp(mixed, axis=0).max() <= 1e-12:
            return np.zeros(s.n, np.int64)
        return D.kmeans(mixed, k, s.seed)

    grids = {"kmeans": {c: kmeans_of(c) for c in columns}, **{x: {c: found[x][c] for c in columns} for x in extra}}
    what = ("training spots measured + held-out spots predicted" if s.protocol != "X"
            else "every spot predicted from other sections")
    draw_maps(s.xy, labels, grids, f"{s.name}, protocol {s.protocol}, seed {s.seed}: spatial domains "
              f"(k = {k}); {what}", path)
    return True


def draw_maps(xy: np.ndarray, labels, grids: dict, title: str, path: Path) -> None:
    """Rows: clusterers of ``grids`` ({clusterer: {column: clusters}}); columns: the manual layers,
    then each column of ``grids``; titles carry each panel's ARI."""
    import textwrap

    plt = _plt()
    labels = np.asarray(labels, dtype=object)
    ok = D.known(labels)
    cats = sorted({str(v) for v in labels[ok]})
    manual = np.full(len(labels), -1)
    manual[ok] = [cats.index(str(v)) for v in labels[ok]]
    names = list(grids)
    columns = list(grids[names[0]])
    ncol = len(columns) + 1
    fig, axes = plt.subplots(len(names), ncol, figsize=(1.9 * ncol, 2.15 * len(names)), squeeze=False)
    size = max(1.0, 2000.0 / len(labels))
    cmap = plt.get_cmap("tab10")

    def panel(ax, lab, text):
        m = lab >= 0
        ax.scatter(xy[m, 0], xy[m, 1], c=cmap(lab[m] % 10), s=size, linewidths=0)
        ax.set_title(text, fontsize=7)
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.set_xticks([])
        ax.set_yticks([])

    for row, name in enumerate(names):
        panel(axes[row, 0], manual, "manual layers")
        axes[row, 0].set_ylabel(_NAMES.get(name, name), fontsize=9)
        for col, key in enumerate(columns, start=1):
            lab = np.asarray(grids[name][key])
            panel(axes[row, col], _match(lab, labels), f"{key} ({_NAMES.get(name, name)} ARI {D.ari(labels, lab):.2f})")
    fig.suptitle(textwrap.fill(title, width=30 * ncol), fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------


def _first_seeds(entries: list[dict], seeds: list[int]) -> list[dict]:
    """Per (section, protocol), the entry of the run's first seed (else the lowest saved); no cohorts."""
    rank = {s: i for i, s in enumerate(seeds)}
    best: dict = {}
    for e in entries:
        if e.get("prior_from") or e["protocol"] not in _protocols():
            continue
        key = (e["name"], e["protocol"])
        if key not in best or (rank.get(e["seed"], 1e9), e["seed"]) < (rank.get(best[key]["seed"], 1e9),
                                                                        best[key]["seed"]):
            best[key] = e
    return list(best.values())


def _pick(entries: list[dict], dataset: str) -> dict | None:
    """The task to draw for ``dataset``: protocol G, else R, else X, first section whose HVGs hold
    one of the dataset's marker genes (else the first section)."""
    markers = _markers(dataset)
    ordered = sorted((e for e in entries if e["dataset"] == dataset),
                     key=lambda e: (_PICK.index(e["protocol"]) if e["protocol"] in _PICK else 3, e["name"]))
    with_marker = [e for e in ordered if any(g in e["genes"] for g in markers)]
    return (with_marker or ordered or [None])[0]


def draw(folder: Path, seeds: list[int]) -> list[Path]:
    """Every figure of the report, from ``folder/predictions``: markers and domains of one section per
    dataset, then a Figure-5 map for every section and protocol where STAGATE ran. Returns the PNGs."""
    entries = _first_seeds(PR.index(folder), seeds)
    written: list[Path] = []
    for dataset in _datasets({e["dataset"] for e in entries}):
        entry = _pick(entries, dataset)
        if entry is None:
            continue
        s = PR.load(entry["path"])
        stem = f"{PR.file_stem(s.name)}_{s.protocol}"
        if marker_figure(s, folder / f"markers_{stem}.png"):
            written.append(folder / f"markers_{stem}.png")
        if domains_figure(s, folder / f"domains_{stem}.png"):
            written.append(folder / f"domains_{stem}.png")
    order = _protocols()
    for e in sorted(entries, key=lambda e: (e["name"], order.index(e["protocol"]))):
        if not set(e["clusterers"]) & set(_EXTRA) or not _manual(e["dataset"]):
            continue
        s = PR.load(e["path"])
        path = folder / f"figure5_{PR.file_stem(s.name)}_{s.protocol}.png"
        if domain_maps(s, path):
            written.append(path)
    return written


def in_folder(folder: Path) -> list[Path]:
    """The report's PNGs already in ``folder`` (``<kind>_<dataset>_<section>_<protocol>.png``), in the
    order ``draw`` writes them."""

    order = _protocols()

    def key(png: Path) -> tuple:
        kind, rest = png.stem.split("_", 1)
        name, protocol = rest.rsplit("_", 1)
        p = order.index(protocol) if protocol in order else 9
        if kind == "figure5":
            return (1, name, p)
        dataset = name.split("_", 1)[0]
        known = datasets.list_datasets()
        return (0, known.index(dataset) if dataset in known else len(known), _KINDS.index(kind), name, p)

    return sorted((p for p in folder.glob("*.png") if p.stem.split("_", 1)[0] in _KINDS and p.stem.count("_") >= 3),
                  key=key)


def caption(png: Path) -> str:
    """The report's caption of a figure, from its file name (``markers_<dataset>_<section>_<P>.png``)."""
    kind, rest = png.stem.split("_", 1)
    name, protocol = rest.rsplit("_", 1)
    section = name.replace("_", "/", 1)
    if kind == "figure5":
        return (f"Spatial domains on {section}, protocol {protocol} (first seed): one row per clusterer (k-means on "
                "top, then Leiden and STAGATE where they ran) on the measured expression and on each method's training "
                "spots (measured) + held-out spots (predicted); colours matched to the manual layers they overlap "
                "most.")
    if kind == "markers":
        return (
            f"Marker genes on {section}, protocol {protocol}, held-out spots: measured (left), each "
            "method's prediction (r: Pearson over these spots), on the colour scale of the measured values."
        )
    return (
        f"Spatial domains on {section}, protocol {protocol}: manual layers, k-means on the measured "
        "expression, and k-means on training spots (measured) + held-out spots (predicted) for each method."
    )


def ari_chart(records: list[dict], path: Path, *, protocols=("R", "G"), methods=None) -> bool:
    """The paper's Figure 5 as a bar chart: one panel per clusterer (k-means, Leiden, STAGATE, those
    with any ARI), one group of bars per method with one bar per protocol, each the mean ARI over
    the sections (manual labels only) and seeds that have it; the first group, "measured", is the
    raw data (every spot measured), the reference. False when no record has manual labels."""
    from .report_domains import MANUAL, clusterers_in, fields

    recs = [r for r in records if r.get("labels") == MANUAL and r.get("protocol") in protocols]
    if not recs:
        return False
    clusterers = [c for c in clusterers_in(recs) if any(fields(c)[0] in r for r in recs)]
    methods = list(methods or method_order({r["method"] for r in recs}))
    groups = ["measured", *methods]

    def mean(field: str, protocol: str, method: str | None) -> float:
        rows = [r for r in recs if r["protocol"] == protocol and (method is None or r["method"] == method)]
        if method is None:  # the measured ARI repeats on every record of a task: one per task
            rows = list({(r["dataset"], r["section"], r["seed"]): r for r in rows}.values())
        vals = [float(r[field]) for r in rows if r.get(field) is not None and np.isfinite(r[field])]
        return float(np.mean(vals)) if vals else np.nan

    plt = _plt()
    fig, axes = plt.subplots(len(clusterers), 1, figsize=(max(6.0, 0.75 * len(groups) + 1.5), 2.3 * len(clusterers)),
                             squeeze=False)
    width = 0.8 / len(protocols)
    colours = plt.get_cmap("tab10")
    for ax, c in zip(axes[:, 0], clusterers, strict=True):
        field, measured_field = fields(c)
        for j, p in enumerate(protocols):
            vals = [mean(measured_field, p, None), *(mean(field, p, m) for m in methods)]
            x = np.arange(len(groups)) + (j - (len(protocols) - 1) / 2) * width
            ax.bar(x, np.nan_to_num(vals), width, color=colours(j), label=f"protocol {p}")
            for xi, v in zip(x, vals, strict=True):
                ax.text(xi, (0 if np.isnan(v) else max(v, 0)) + 0.01, "n/a" if np.isnan(v) else f"{v:.2f}",
                        ha="center", va="bottom", fontsize=6, rotation=90)
        ax.axvspan(-0.5, 0.5, color="0.9", zorder=0)
        ax.set_xticks(np.arange(len(groups)), groups, fontsize=7, rotation=20)
        ax.set_xlim(-0.5, len(groups) - 0.5)
        ax.set_ylabel(f"ARI, {D.NAMES[c]}", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_ylim(min(0.0, ax.get_ylim()[0]), max(0.1, ax.get_ylim()[1] * 1.2))
    axes[0, 0].legend(fontsize=7, loc="upper center", ncol=len(protocols))
    sections = sorted({f"{r['dataset']}/{r['section']}" for r in recs})
    axes[0, 0].set_title(f"Spatial domains (ARI against the manual layers), mean over {', '.join(sections)}; "
                         "'measured' = the raw data", fontsize=8)
    fig.tight_layout()
    _save_png(fig, path)
    plt.close(fig)
    return True
